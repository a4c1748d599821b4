"""A pack covers its scope only: nothing of another tenant, sandbox or time window."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from audit.signing import load_verifier
from sandbox.evidence.collect import Scope, time_text
from sandbox.evidence.verify import verify_pack
from tests.evidence.conftest import Packed, make_pack
from tests.evidence.history import History, compliant

# Everything that identifies hospital-b in the log: tenant, sandbox, namespaces,
# dataset, workload and people.
OTHER = ["hospital-b", "oncology", "tumour-scans", "sbx-hospital-b", "hospital-b.example"]


def _all_bytes(pack: Path) -> list[tuple[str, bytes]]:
    return [
        (p.relative_to(pack).as_posix(), p.read_bytes()) for p in pack.rglob("*") if p.is_file()
    ]


def test_a_tenant_pack_holds_nothing_of_another_tenant(packed: Packed) -> None:
    files = _all_bytes(packed.pack)
    # the scan sees every file, and the entries (one file, one entry a line)
    assert {"entries.ndjson", "receipts", "report.html", "evidence.json"} <= dict(files).keys()
    assert dict(files)["entries.ndjson"].count(b"\n") > 10
    for name, data in files:
        lowered = data.lower()
        for word in OTHER:
            assert word.encode() not in lowered, f"{name} mentions {word}"
    # and the other tenant's own pack does mention them (the scan can see)
    assert any(b"bank-a" in data for _, data in files)


def test_the_other_tenant_pack_has_its_own_entries(tmp_path: Path, two_tenants: History) -> None:
    other = make_pack(tmp_path, two_tenants, Scope("hospital-b"), name="b")
    for name, data in _all_bytes(other.pack):
        assert b"card-claims" not in data, name
        assert b"bank-a" not in data, name


def test_sandbox_scope(tmp_path: Path) -> None:
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    compliant(history, "bank-a", "churn", "accounts")
    packed = make_pack(tmp_path, history, Scope("bank-a", "churn"))
    for name, data in _all_bytes(packed.pack):
        assert b"fraud" not in data, name
        assert b"card-claims" not in data, name


def test_time_window_narrows_reads_only(tmp_path: Path) -> None:
    history = History()
    key = history.provision("bank-a", "fraud", "card-claims")
    history.read("bank-a", "fraud", "card-claims", streamed=False)  # before the window
    since = history.start + dt.timedelta(minutes=history.clock, seconds=30)
    history.read("bank-a", "fraud", "card-claims", streamed=False)  # inside
    history.expire("bank-a", "fraud", "card-claims", key)
    packed = make_pack(tmp_path, history, Scope("bank-a", since=time_text(since)))
    report = verify_pack(packed.pack, [load_verifier(Path(v)) for v in packed.vkeys])
    assert report.ok, report.problems
    lines = (packed.pack / "entries.ndjson").read_bytes().splitlines()
    actions = [json.loads(line)["action"] for line in lines]
    assert actions.count("dataset.read") == 1
    assert "dataset.granted" in actions  # lifecycle entries before the window are kept
    assert "not-satisfied" not in {f.status for f in report.findings}


def test_an_entry_outside_the_scope_fails_verify(tmp_path: Path, two_tenants: History) -> None:
    """A signer who slips another tenant's entry (with a valid receipt) in is caught."""
    from audit.log import LogReader
    from audit.merkle import MemoryHashStore, leaf_hash
    from sandbox.evidence import receipts
    from sandbox.evidence.collect import collect
    from sandbox.evidence.pack import entry_file, write_pack

    a = make_pack(tmp_path, two_tenants, Scope("bank-a"), name="a")
    # The same log, read for bank-a, with one hospital-b entry added and a receipt for
    # the lot built from the real log: every hash is genuine, the scope is not.
    found = collect(a.log.path, Scope("bank-a"))
    theirs = collect(a.log.path, Scope("hospital-b"))
    stolen = theirs.entries[0]
    found.entries = sorted([*found.entries, stolen])
    with LogReader(a.log.path) as reader:
        tree = MemoryHashStore(leaf_hash(data) for _, data in reader.iter_entries())
    found.receipt = receipts.build(
        tree, found.size, [i for i, _ in found.entries], found.checkpoint
    )
    write_pack(found, tmp_path / "mixed", a.officer)
    report = verify_pack(tmp_path / "mixed", [load_verifier(Path(v)) for v in a.vkeys])
    assert entry_file(stolen[0]) in [p.item for p in report.problems], report.problems
