"""An event appended again — a writer retrying after its crash or a lost reply — is one entry.

The writer cannot know whether the log took an event when it died (or its connection
did) between the append and the acknowledgement. Sending it again with the same
``event_id`` must not make a second entry: the log answers with the index it has, also
after it was closed and reopened. Any other event is appended as before.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from audit.errors import MalformedError
from audit.log import AuditLog, LogReader
from audit.note import Signer

from .helpers import ORIGIN, event


def test_the_same_event_id_is_appended_once_and_answered_with_its_index(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    first, second, third = event(1), event(2), event(3)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        assert log.append_batch([first, second]) == [0, 1]
        # A retry carries the same id but a new time and nonce (the event was rebuilt).
        retried = second.model_copy(update={"nonce": "f" * 32})
        assert log.append_batch([retried, third]) == [1, 2]
        assert log.append_batch([third, third]) == [2, 2]
        assert log.size == 3
    with AuditLog(tmp_path / "log", signer) as reopened:  # a new writer, after a restart
        assert reopened.append_batch([first, event(4)]) == [0, 3]
        assert reopened.size == 4
    reader = LogReader(tmp_path / "log")
    try:
        ids = [reader.entry(i).event_id for i in range(reader.size)]
        # The entry kept is the first one sent.
        assert reader.entry(1).nonce == second.nonce
    finally:
        reader.close()
    assert ids == [first.event_id, second.event_id, third.event_id, ids[3]]
    assert len(set(ids)) == 4


def test_an_event_id_reused_for_another_event_is_refused_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """Answering a different event with the old index would drop it silently: a writer's
    bug (or a forged retry) must get an error, and the batch must append nothing."""
    signer = Signer.generate(ORIGIN)
    original = event(1)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        assert log.append(original) == 0
        other = event(2).model_copy(update={"event_id": original.event_id})
        with pytest.raises(MalformedError, match="already entry 0"):
            log.append_batch([event(3), other])
        # Within one batch, too.
        first = event(4)
        twin = event(5).model_copy(update={"event_id": first.event_id})
        with pytest.raises(MalformedError, match="another event"):
            log.append_batch([first, twin])
        assert log.size == 1
        # A genuine retry (rebuilt: new time and nonce) is still answered with its index.
        rebuilt = original.model_copy(update={"nonce": "e" * 32, "time": event(9).time})
        assert log.append(rebuilt) == 0
    with AuditLog(tmp_path / "log", signer) as reopened:  # remembered across a restart
        with pytest.raises(MalformedError):
            reopened.append(event(6).model_copy(update={"event_id": original.event_id}))
        assert reopened.size == 1


def test_retries_racing_their_first_attempt_get_its_index_and_make_no_second_entry(
    tmp_path: Path,
) -> None:
    """Writers retrying on a timeout may resend while the first attempt is still being
    committed by another thread: each event id ends up as one entry, and every caller
    is answered with that entry's index."""
    signer = Signer.generate(ORIGIN)
    events = [event(i) for i in range(200)]
    answers: dict[str, set[int]] = {e.event_id: set() for e in events}
    lock = threading.Lock()
    errors: list[BaseException] = []
    with AuditLog.create(tmp_path / "log", ORIGIN, signer, checkpoint_interval=60) as log:

        def writer(offset: int) -> None:
            for k in range(0, len(events), 5):
                chunk = events[k : k + 5]
                chunk = chunk[offset % 5 :] + chunk[: offset % 5]  # each in its own order
                batch = [e.model_copy(update={"nonce": f"{offset:032x}"}) for e in chunk]
                try:
                    found = log.append_batch(batch)
                except Exception as exc:  # reported below: a thread's error fails no test
                    errors.append(exc)
                    return
                with lock:
                    for e, index in zip(batch, found, strict=True):
                        answers[e.event_id].add(index)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert log.size == len(events)
        stored = {log.entry(i).event_id: i for i in range(log.size)}
    assert all(answers[e.event_id] == {stored[e.event_id]} for e in events)
