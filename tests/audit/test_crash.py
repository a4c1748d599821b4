"""Crash safety: kill -9 the writer during heavy appends, over and over.

After every kill the log is reopened (recovering a torn tail) and every entry whose
append had returned must be there, at its index, with its content; every checkpoint seen
on disk must be consistent with the one before it.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import select
import signal
import threading
import time
from pathlib import Path

import pytest

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.entry import encode_entry
from audit.log import CHECKPOINT_FILE, ENTRIES_FILE, AuditLog
from audit.merkle import verify_consistency
from audit.note import Signer
from audit.verify import verify_log
from audit.wal import encode_record

from .helpers import ORIGIN, event

KILLS = 100


def _writer(path: Path, key: str, ack_fd: int, seed: int) -> None:
    """Child process: append batches from two threads, acknowledging each on ``ack_fd``."""
    try:
        log = AuditLog(path, Signer.from_private_key(key), checkpoint_interval=0.02)
    except BaseException as exc:  # pragma: no cover - reported to the parent
        os.write(ack_fd, f"ERR {exc!r}\n".encode()[:4000])
        os._exit(1)

    def run(k: int) -> None:
        rng = random.Random(seed * 10 + k)  # noqa: S311 - workload shape, not security
        while True:
            batch = [event(rng.randrange(10**6)) for _ in range(rng.randint(1, 60))]
            indices = log.append_batch(batch)
            ids = ",".join(e.event_id for e in batch)
            os.write(ack_fd, f"{indices[0]} {ids}\n".encode())

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _read_checkpoint(path: Path, signer: Signer) -> Checkpoint | None:
    try:
        return open_checkpoint((path / CHECKPOINT_FILE).read_bytes(), [signer.verifier])
    except FileNotFoundError:  # pragma: no cover - between rename steps never happens
        return None


@pytest.mark.slow
def test_kill_9_during_appends_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    path = tmp_path / "log"
    signer = Signer.generate(ORIGIN)
    AuditLog.create(path, ORIGIN, signer).close()
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(1234)  # noqa: S311 - reproducible kill timing
    acked: dict[int, str] = {}
    checkpoints: list[Checkpoint] = []

    def observe() -> None:
        cp = _read_checkpoint(path, signer)
        if cp is not None and (not checkpoints or cp != checkpoints[-1]):
            checkpoints.append(cp)

    for kill in range(KILLS):
        read_fd, write_fd = os.pipe()
        child = ctx.Process(target=_writer, args=(path, signer.private_key, write_fd, kill))
        child.start()
        os.close(write_fd)
        deadline = time.monotonic() + rng.uniform(0.05, 0.3)
        data = b""
        while (left := deadline - time.monotonic()) > 0:
            if select.select([read_fd], [], [], min(left, 0.01))[0]:
                data += os.read(read_fd, 1 << 16)
            observe()
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        while chunk := os.read(read_fd, 1 << 16):
            data += chunk
        os.close(read_fd)
        assert not data.startswith(b"ERR"), data.decode()
        new: dict[int, str] = {}
        for line in data.split(b"\n")[:-1]:  # a last line without newline was never sent whole
            first, ids = line.decode().split(" ")
            for k, event_id in enumerate(ids.split(",")):
                new[int(first) + k] = event_id
        acked.update(new)
        if rng.random() < 0.3:  # also leave a torn final write, as a kernel may
            # One crash leaves at most one torn write: the kill above may already have
            # left one, so recover it first, then tear a write on the clean tail.
            AuditLog(path, signer).close()
            record = encode_record(encode_entry(event(kill), 10**9))
            with (path / ENTRIES_FILE).open("ab") as f:
                f.write(record[: rng.randrange(1, len(record))])
        with AuditLog(path, signer) as log:
            assert log.size >= max(acked, default=-1) + 1, f"kill {kill}: entries lost"
            for index, event_id in new.items():
                assert f'"event_id":"{event_id}"'.encode() in log.entry_bytes(index), index
            observe()
            for old, cur in itertools.pairwise(checkpoints):
                if old.size == 0:
                    continue
                proof = log.consistency_proof(old.size, cur.size) if cur.size > old.size else []
                verify_consistency(old.size, cur.size, proof, old.root, cur.root)
        checkpoints[:] = checkpoints[-1:]
    report = verify_log(path, [signer.verifier])
    assert report.entries >= len(acked) > KILLS
