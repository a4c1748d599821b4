"""Entries: canonical JSON, the size limit, strict parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.canonical import canonical_json
from audit.entry import (
    MAX_ENTRY_BYTES,
    Actor,
    DecisionRecord,
    Entry,
    Event,
    Resource,
    encode_entry,
    entry_index_hint,
)
from audit.errors import EntryTooLargeError, MalformedError


def event(**overrides: Any) -> Event:
    """A typical dataset read."""
    fields: dict[str, Any] = {
        "actor": Actor(user="alice@bank.example", groups=("bank-a:members",)),
        "action": "dataset.read",
        "resource": Resource(kind="Dataset", name="claims-2024", tenant="bank-a", sandbox="fraud"),
        "decision": DecisionRecord(allow=True, policy_digest="sha256:" + "a" * 64),
        "outcome": "success",
        "details": {"bytes": 1024, "sha256": "b" * 64, "object": "claims/part-0.parquet"},
    }
    fields.update(overrides)
    return Event(**fields)


def test_entry_bytes_are_rfc8785_canonical() -> None:
    data = encode_entry(event(details={"z": 1, "a": [True, None, "é"], "m": {"b": 2, "a": 1}}), 7)
    assert data == rfc8785.dumps(json.loads(data))
    entry = Entry.from_bytes(data)
    assert entry.index == 7
    assert entry.to_bytes() == data
    assert entry_index_hint(data) == 7


def test_time_is_utc_with_microseconds() -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    data = json.loads(encode_entry(event(time=when), 0))
    assert data["time"] == "2025-03-04T03:06:07.000000Z"
    with pytest.raises(ValueError, match="time zone"):
        event(time=datetime(2025, 1, 1))


def test_nonce_is_128_random_bits() -> None:
    a, b = event(), event()
    assert len(a.nonce) == 32
    assert a.nonce != b.nonce
    assert a.event_id != b.event_id


def test_oversized_entries_are_refused_clearly() -> None:
    big = event(details={"blob": "x" * MAX_ENTRY_BYTES})
    with pytest.raises(EntryTooLargeError, match="over the 65536-byte limit"):
        encode_entry(big, 0)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"index":1}',
        b"\xff",
    ],
)
def test_malformed_entries_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedError):
        Entry.from_bytes(data)


def test_non_canonical_entries_are_refused() -> None:
    data = encode_entry(event(), 3)
    spaced = json.dumps(json.loads(data), indent=1).encode()
    with pytest.raises(MalformedError, match="canonical"):
        Entry.from_bytes(spaced)


def test_unknown_fields_are_refused() -> None:
    doc = json.loads(encode_entry(event(), 3))
    doc["extra"] = 1
    with pytest.raises(MalformedError, match="schema"):
        Entry.from_bytes(rfc8785.dumps(doc))


def test_index_hint_ignores_index_keys_inside_details() -> None:
    data = encode_entry(event(details={"index": 99, "note": '"index":5'}), 12)
    assert entry_index_hint(data) == 12


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_canonical_json_matches_the_reference_implementation(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(MalformedError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


def test_utc_default_time_is_now() -> None:
    assert abs(event().time - datetime.now(UTC)) < timedelta(seconds=5)
