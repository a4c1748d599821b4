"""The audit service gets every checkpoint witnessed (c2sp.org/tlog-witness), for real.

Witnesses are the project's own witness server (``witness_app`` with file state, and
``sandboxctl audit witness serve`` as a process), on loopback. A rollback or fork of the
log is caught by the witnesses even when no client kept a checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from audit.client import AuditClient
from audit.errors import AnchorMismatchError
from audit.log import AuditLog
from audit.note import Note, Signer
from audit.service import AccessPolicy, create_app, token_digest
from audit.signing import generate_key_file
from audit.witness import Cosigner, FileWitnessState, Witness, witness_app
from audit.witnessing import (
    COSIGNED_FILE,
    WitnessEndpoint,
    Witnessing,
    fetch_witnessed,
    verify_cosigned,
)
from sandbox.cli.audit import app as audit_app
from tests.audit.helpers import forge_after

from .conftest import ORIGIN, free_port, make_event, wait_for
from .test_cli import running

TOKEN = "witnessing-writer-token-0123456789"
Serve = Callable[..., Any]


@dataclass
class RunningWitness:
    cosigner: Cosigner
    url: str
    state: FileWitnessState

    @property
    def endpoint(self) -> WitnessEndpoint:
        return WitnessEndpoint(self.url, self.cosigner.verifier)

    def size(self) -> int | None:
        latest = Witness(self.cosigner, {}, self.state).latest(ORIGIN)
        return None if latest is None else latest.size


@pytest.fixture
def log_key() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
def witnesses(tmp_path: Path, serve: Serve, log_key: Signer) -> Iterator[list[RunningWitness]]:
    """Two real witnesses trusting the log key, each on its own port with its own state."""
    with ExitStack() as stack:
        running_ = []
        for n in (1, 2):
            cosigner = Cosigner.generate(f"witness.regsandbox.test/w{n}")
            state = FileWitnessState(tmp_path / f"witness-{n}")
            stack.callback(state.close)
            witness = Witness.from_vkeys(cosigner, [log_key.verifier.vkey], state)
            url = stack.enter_context(serve(witness_app(witness)))
            running_.append(RunningWitness(cosigner, url, state))
        yield running_


def _log(path: Path, key: Signer, extends: list[tuple[str, bytes]] | None = None) -> AuditLog:
    if (path / "log.json").exists():
        return AuditLog(path, key, checkpoint_interval=0.02, extends=extends or [])
    return AuditLog.create(path, ORIGIN, key, checkpoint_interval=0.02)


def _witnessing(log: AuditLog, path: Path, witnesses: list[RunningWitness]) -> Witnessing:
    return Witnessing(log, [w.endpoint for w in witnesses], path / COSIGNED_FILE, interval=0.02)


def _cosigned_size(note: bytes | None) -> int:
    if note is None:
        return -1
    return int(Note.parse(note).text.split("\n")[1])


def test_every_checkpoint_is_cosigned_and_served(
    tmp_path: Path, serve: Serve, log_key: Signer, witnesses: list[RunningWitness]
) -> None:
    path = tmp_path / "log"
    log = _log(path, log_key)
    witnessing = _witnessing(log, path, witnesses)
    policy = AccessPolicy(writers={token_digest(TOKEN): "operator"}, readers={}, open_reads=True)
    try:
        witnessing.start()
        with serve(create_app(log, policy, witnessing=witnessing)) as url:
            assert httpx.get(f"{url}/v1/checkpoint/cosigned").status_code in (200, 404)
            for batch in range(3):
                log.append_batch([make_event(batch * 10 + i) for i in range(10)])
            size = _cosigned_size(log.publish_checkpoint())
            assert size == 30

            def all_cosigned() -> bool:
                note = httpx.get(f"{url}/v1/checkpoint/cosigned").content
                _, names = verify_cosigned(
                    note, [log_key.verifier], [w.cosigner.verifier for w in witnesses], 2
                )
                return _cosigned_size(note) == size and len(names) == 2

            wait_for(all_cosigned, "both witnesses to cosign the checkpoint of 30")
            assert [w.size() for w in witnesses] == [30, 30]
            status = httpx.get(f"{url}/v1/status").json()
            [witnessed] = [c for c in status["conditions"] if c["type"] == "Witnessed"]
            assert witnessed["status"] == "True"
            metrics = httpx.get(f"{url}/metrics").text
            for w in witnesses:
                label = f'{{witness="{w.cosigner.name}"}}'
                assert f"regsandbox_audit_witness_cosigned_tree_size{label} 30.0" in metrics
                assert f"regsandbox_audit_witness_lag_entries{label} 0.0" in metrics
    finally:
        witnessing.stop()
        log.close()


def test_a_witness_at_another_size_gets_it_again_from_its_size(
    tmp_path: Path, log_key: Signer, witnesses: list[RunningWitness]
) -> None:
    """409 Conflict carries the witness's size; the log resubmits with a proof from it."""
    path = tmp_path / "log"
    with _log(path, log_key) as log:
        log.append_batch([make_event(i) for i in range(7)])
        log.publish_checkpoint()
        first = _witnessing(log, path, witnesses[:1])
        assert first.run_once() is not None
        first.stop()
        log.append_batch([make_event(i) for i in range(7, 19)])
        log.publish_checkpoint()
        fresh = _witnessing(log, path, witnesses)  # knows nothing: starts from old 0
        merged = fresh.run_once()
        fresh.stop()
    assert merged is not None
    assert [w.size() for w in witnesses] == [19, 19]
    status = fresh.status()
    assert all(s.refused is None and s.error is None for s in status.values())
    verify_cosigned(merged, [log_key.verifier], [w.cosigner.verifier for w in witnesses], 2)


def test_a_rollback_or_fork_is_caught_by_the_witnesses_without_any_client_checkpoint(
    tmp_path: Path, serve: Serve, log_key: Signer, witnesses: list[RunningWitness]
) -> None:
    path = tmp_path / "log"
    with _log(path, log_key) as log:
        log.append_batch([make_event(i) for i in range(10)])
    shutil.copytree(path, tmp_path / "at-10")  # an old copy of the volume
    with _log(path, log_key) as log:
        log.append_batch([make_event(i) for i in range(10, 20)])
        log.publish_checkpoint()
        witnessing = _witnessing(log, path, witnesses)
        assert witnessing.run_once() is not None
        witnessing.stop()
    assert [w.size() for w in witnesses] == [20, 20]

    # The volume is put back to its state at 10 entries; no client saved a checkpoint.
    shutil.rmtree(path)
    shutil.copytree(tmp_path / "at-10", path)
    log = _log(path, log_key)
    witnessing = _witnessing(log, path, witnesses)
    policy = AccessPolicy(writers={}, readers={}, open_reads=True)
    try:
        with serve(create_app(log, policy, witnessing=witnessing)) as url:
            assert witnessing.run_once() is None  # nobody cosigns the rolled-back log
            for name, status in witnessing.status().items():
                assert status.refused is not None, name
                assert "cosigned a tree of 20 entries" in status.refused
                assert "has 10" in status.refused
            body = httpx.get(f"{url}/v1/status").json()
            [witnessed] = [c for c in body["conditions"] if c["type"] == "Witnessed"]
            assert (witnessed["status"], witnessed["reason"]) == ("False", "WitnessRefused")
            metrics = httpx.get(f"{url}/metrics").text
            assert 'reason="ahead",witness="witness.regsandbox.test/w1"} 1.0' in metrics

            # It grows a different history past 20: the witnesses' proof check fails (422).
            log.append_batch([make_event(100 + i) for i in range(15)])
            log.publish_checkpoint()
            assert witnessing.run_once() is None
            for status in witnessing.status().values():
                assert status.refused is not None
                assert "fork or a rollback" in status.refused
            metrics = httpx.get(f"{url}/metrics").text
            assert 'reason="refused",witness="witness.regsandbox.test/w2"} 1.0' in metrics
    finally:
        witnessing.stop()
        log.close()
    assert [w.size() for w in witnesses] == [20, 20]  # never moved to the forged history


def test_an_equal_size_fork_is_refused(
    tmp_path: Path, log_key: Signer, witnesses: list[RunningWitness]
) -> None:
    real, forged = tmp_path / "real", tmp_path / "forged"
    with _log(real, log_key) as log:
        log.append_batch([make_event(i) for i in range(12)])
        log.publish_checkpoint()
        assert _witnessing(log, real, witnesses).run_once() is not None
    with _log(forged, log_key) as log:
        log.append_batch([make_event(500 + i) for i in range(12)])
        log.publish_checkpoint()
        witnessing = _witnessing(log, forged, witnesses)
        assert witnessing.run_once() is None
        witnessing.stop()
    assert all(s.refused and "fork" in s.refused for s in witnessing.status().values())


def test_appends_do_not_wait_for_an_unreachable_witness(
    tmp_path: Path, serve: Serve, log_key: Signer
) -> None:
    path = tmp_path / "log"
    log = _log(path, log_key)
    dead = WitnessEndpoint(f"http://127.0.0.1:{free_port()}", Cosigner.generate("w.x/1").verifier)
    witnessing = Witnessing(log, [dead], path / COSIGNED_FILE, interval=0.02, timeout=1.0)
    policy = AccessPolicy(writers={token_digest(TOKEN): "operator"}, readers={}, open_reads=True)
    try:
        witnessing.start()
        with serve(create_app(log, policy, witnessing=witnessing)) as url:
            with AuditClient(url, TOKEN, verifiers=[log_key.verifier]) as client:
                assert client.append([make_event(i) for i in range(5)]) == list(range(5))
            wait_for(
                lambda: 'reason="unreachable"' in httpx.get(f"{url}/metrics").text,
                "an unreachable-witness failure in the metrics",
            )
            log.publish_checkpoint()
            wait_for(
                lambda: (
                    'regsandbox_audit_witness_lag_entries{witness="w.x/1"} 5.0'
                    in httpx.get(f"{url}/metrics").text
                ),
                "the witness lag to show the 5 entries it never cosigned",
            )
            # A witness that never cosigned still has an age (since the service started),
            # so the stale-cosignature alert fires for it as for one that stopped.
            ages = [
                float(line.rsplit(" ", 1)[1])
                for line in httpx.get(f"{url}/metrics").text.splitlines()
                if line.startswith(
                    'regsandbox_audit_witness_cosignature_age_seconds{witness="w.x/1"}'
                )
            ]
            assert len(ages) == 1
            assert ages[0] > 0
            assert httpx.get(f"{url}/healthz").status_code == 200
            body = httpx.get(f"{url}/v1/status").json()
            [witnessed] = [c for c in body["conditions"] if c["type"] == "Witnessed"]
            assert witnessed["reason"] == "WitnessUnavailable"
            assert httpx.get(f"{url}/v1/checkpoint/cosigned").status_code == 404
    finally:
        witnessing.stop()
        log.close()


def test_verify_requires_a_quorum_of_named_witnesses(
    tmp_path: Path, log_key: Signer, witnesses: list[RunningWitness]
) -> None:
    path = tmp_path / "log"
    with _log(path, log_key) as log:
        log.append_batch([make_event(i) for i in range(9)])
        log.publish_checkpoint()
        assert _witnessing(log, path, witnesses).run_once() is not None
    w1, w2 = (w.cosigner.verifier.vkey for w in witnesses)
    w3 = Cosigner.generate("witness.regsandbox.test/w3").verifier.vkey  # never cosigned
    vkey_file = tmp_path / "w1.vkey"
    vkey_file.write_text(w1 + "\n")
    base = ["verify", "--log", str(path), "--vkey", log_key.verifier.vkey]

    def run(*args: str) -> Any:
        app: typer.Typer = audit_app
        return CliRunner().invoke(app, [*base, *args])

    ok = run("--witness-vkey", str(vkey_file), "--witness-vkey", w2, "--witness-quorum", "2")
    assert ok.exit_code == 0, ok.output
    assert "cosigned by witness.regsandbox.test/w1, witness.regsandbox.test/w2" in ok.output
    assert run("--witness-vkey", w1, "--witness-vkey", w3, "--witness-quorum", "1").exit_code == 0
    too_few = run("--witness-vkey", w1, "--witness-vkey", w3, "--witness-quorum", "2")
    assert too_few.exit_code == 3
    assert "fewer than the quorum of 2" in too_few.output
    assert run("--witness-vkey", w3).exit_code == 3
    assert run("--witness-vkey", w1, "--witness-quorum", "2").exit_code == 2

    # A cosigned checkpoint whose cosignature was altered counts for nothing.
    note = (path / COSIGNED_FILE).read_bytes()
    parsed = Note.parse(note)
    last = parsed.signatures[-1]
    altered = Note(
        parsed.text,
        (*parsed.signatures[:-1], type(last)(last.name, last.key_id, last.signature[:-1] + b"x")),
    )
    bad = tmp_path / "bad.cosigned"
    bad.write_bytes(altered.to_bytes())
    result = run("--witness-vkey", w1, "--witness-vkey", w2, "--cosigned", str(bad))
    assert result.exit_code == 3, result.output


def test_the_cli_service_gets_its_checkpoints_witnessed(tmp_path: Path) -> None:
    """`sandboxctl audit witness serve` and `sandboxctl audit serve --witness` as processes."""
    witness_key = tmp_path / "witness.key"
    cosigner = Cosigner.generate("witness.regsandbox.test/cli")
    witness_key.write_text(cosigner.private_key + "\n")
    log_key_file = tmp_path / "log.key"
    signer = generate_key_file(log_key_file, ORIGIN)
    AuditLog.create(tmp_path / "log", ORIGIN, signer).close()
    writers = tmp_path / "writers"
    writers.write_text(f"{token_digest(TOKEN)} operator\n")
    w_port, a_port = free_port(), free_port()
    witness_url, audit_url = f"http://127.0.0.1:{w_port}", f"http://127.0.0.1:{a_port}"
    witness_args = ["witness", "serve", "--state", str(tmp_path / "wstate")]
    witness_args += ["--key", str(witness_key), "--vkey", signer.verifier.vkey]
    witness_args += ["--listen", f"127.0.0.1:{w_port}"]
    audit_args = ["serve", "--log", str(tmp_path / "log"), "--writers", str(writers)]
    audit_args += ["--key", str(log_key_file), "--listen", f"127.0.0.1:{a_port}", "--open-reads"]
    audit_args += ["--witness", witness_url, "--witness-vkey", cosigner.verifier.vkey]
    (tmp_path / "w").mkdir()
    (tmp_path / "a").mkdir()
    with (
        running(witness_args, f"{witness_url}/x/checkpoint", tmp_path / "w"),
        running(audit_args, f"{audit_url}/healthz", tmp_path / "a"),
    ):
        with AuditClient(audit_url, TOKEN, verifiers=[signer.verifier]) as client:
            client.append([make_event(i) for i in range(6)])
            client.prove(5)  # signs a checkpoint of 6 now

        def cosigned_at_6() -> bool:
            note = httpx.get(f"{audit_url}/v1/checkpoint/cosigned").content
            verify_cosigned(note, [signer.verifier], [cosigner.verifier], 1)
            return _cosigned_size(note) == 6

        wait_for(cosigned_at_6, "the witness process to cosign the checkpoint of 6")
        saved = tmp_path / "cosigned"
        saved.write_bytes(httpx.get(f"{audit_url}/v1/checkpoint/cosigned").content)
    app: typer.Typer = audit_app
    args = ["verify", "--log", str(tmp_path / "log"), "--vkey", signer.verifier.vkey]
    args += ["--witness-vkey", cosigner.verifier.vkey, "--cosigned", str(saved)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cosigned by witness.regsandbox.test/cli" in result.output


def test_the_witnesses_are_a_second_anchor_checked_before_signing(
    tmp_path: Path, log_key: Signer, witnesses: list[RunningWitness]
) -> None:
    """No anchor configured: the checkpoints the witnesses cosigned stop a rolled-back log."""
    path = tmp_path / "log"
    with _log(path, log_key) as log:
        log.append_batch([make_event(i) for i in range(8)])
    shutil.copytree(path, tmp_path / "at-8")
    with _log(path, log_key) as log:
        log.append_batch([make_event(i) for i in range(8, 16)])
        log.publish_checkpoint()
        assert _witnessing(log, path, witnesses).run_once() is not None
    endpoints = [w.endpoint for w in witnesses]
    assert [Note.parse(n).text.split("\n")[1] for _, n in fetch_witnessed(endpoints, ORIGIN)] == [
        "16",
        "16",
    ]
    with _log(path, log_key, extends=fetch_witnessed(endpoints, ORIGIN)) as log:
        assert log.size == 16  # the real log extends what they cosigned

    real = tmp_path / "real-16"
    shutil.copytree(path, real)
    at_8 = (tmp_path / "at-8" / "checkpoint").read_bytes()

    # Rolled back to the volume's state at 8 entries.
    shutil.rmtree(path)
    shutil.copytree(tmp_path / "at-8", path)
    with pytest.raises(AnchorMismatchError) as info:
        _log(path, log_key, extends=fetch_witnessed(endpoints, ORIGIN))
    assert info.value.reason == "LogRolledBack"
    assert "kept by witness witness.regsandbox.test/w1" in str(info.value)
    assert (path / "checkpoint").read_bytes() == at_8  # nothing signed

    # Entries 8 to 15 rewritten, CRCs and hashes recomputed, checkpoint of 8 put back.
    shutil.rmtree(path)
    shutil.copytree(real, path)
    forge_after(path, 8, at_8)
    with pytest.raises(AnchorMismatchError) as info:
        _log(path, log_key, extends=fetch_witnessed(endpoints, ORIGIN))
    assert info.value.reason == "CheckpointAnchorMismatch"
    assert (path / "checkpoint").read_bytes() == at_8
    # A witness that cannot be reached is skipped, not trusted nor fatal.
    dead = WitnessEndpoint(f"http://127.0.0.1:{free_port()}", witnesses[0].cosigner.verifier)
    assert fetch_witnessed([dead], ORIGIN, timeout=1.0) == []


def test_sandboxctl_serve_refuses_a_log_its_witnesses_saw_longer(
    tmp_path: Path, log_key: Signer, witnesses: list[RunningWitness]
) -> None:
    """`audit serve --witness`: the witnesses' checkpoints are checked before signing."""
    key_file = tmp_path / "log.key"
    key_file.write_text(log_key.private_key + "\n")
    path = tmp_path / "log"
    with _log(path, log_key) as log:
        log.append_batch([make_event(i) for i in range(4)])
    shutil.copytree(path, tmp_path / "at-4")
    with _log(path, log_key) as log:
        log.append_batch([make_event(i) for i in range(4, 10)])
        log.publish_checkpoint()
        assert _witnessing(log, path, witnesses).run_once() is not None
    shutil.rmtree(path)
    shutil.copytree(tmp_path / "at-4", path)
    writers = tmp_path / "writers"
    writers.write_text(f"{token_digest(TOKEN)} operator\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--log", str(path), "--writers", str(writers), "--key", str(key_file)]
    args += ["--listen", f"127.0.0.1:{port}"]
    for w in witnesses:
        args += ["--witness", w.url, "--witness-vkey", w.cosigner.verifier.vkey]
    with running(args, f"{url}/healthz", tmp_path):
        health = httpx.get(f"{url}/healthz")
        assert health.status_code == 503
        [anchor] = [c for c in health.json()["conditions"] if c["type"] == "AnchorConsistent"]
        assert anchor["reason"] == "LogRolledBack"
        assert "holds 4 entries but it signed a checkpoint of 10" in anchor["message"]
        assert "witness.regsandbox.test/w" in anchor["message"]
    assert [w.size() for w in witnesses] == [10, 10]


def test_cosignatures_from_unknown_keys_in_an_answer_are_ignored(log_key: Signer) -> None:
    """'The client MUST ignore any cosignatures from unknown keys.' (tlog-witness)"""
    from audit.checkpoint import Checkpoint
    from audit.merkle import EMPTY_ROOT
    from audit.witnessing import _own_cosignature, _RefusedError

    checkpoint = Checkpoint(ORIGIN, 0, EMPTY_ROOT)
    ours, stranger = Cosigner.generate("w.example/ours"), Cosigner.generate("w.example/other")
    endpoint = WitnessEndpoint("http://unused", ours.verifier)
    own = ours.cosign(checkpoint, 1_700_000_000)
    body = (stranger.cosign(checkpoint, 1_700_000_000).line() + own.line()).encode()
    assert _own_cosignature(endpoint, checkpoint.text(), body) == own
    with pytest.raises(_RefusedError, match=r"no cosignature by w\.example/ours"):
        _own_cosignature(
            endpoint, checkpoint.text(), stranger.cosign(checkpoint, 1).line().encode()
        )
    forged = type(own)(own.name, own.key_id, own.signature[:-1] + bytes([own.signature[-1] ^ 1]))
    with pytest.raises(_RefusedError, match="bad cosignature"):
        _own_cosignature(endpoint, checkpoint.text(), forged.line().encode())
