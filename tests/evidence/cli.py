"""Driving ``sandboxctl evidence`` in-process: one signed log, one officer key, and the
pack/verify invocations the CLI tests share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from audit.signing import generate_key_file
from sandbox.cli import app
from tests.evidence.history import History, Written, compliant, write_log

__all__ = ["Officer", "officer", "run"]

_runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    """``sandboxctl ARGS``: exit code, stdout, stderr."""
    result = _runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@dataclass(frozen=True)
class Officer:
    """A compliant history of bank-a/fraud written to a log, and an officer's key."""

    written: Written
    key: Path
    vkey: Path

    @property
    def vkeys(self) -> list[str]:
        """The ``--vkey`` options naming the officer's and the log's keys."""
        return ["--vkey", str(self.vkey), "--vkey", str(self.written.vkey)]

    def pack(self, out: Path, *options: str, log: Path | None = None) -> tuple[int, str, str]:
        """``evidence pack --log … -o OUT --key … OPTIONS`` (the scope goes in OPTIONS)."""
        source = self.written.path if log is None else log
        return run(
            "evidence",
            "pack",
            "--log",
            str(source),
            *options,
            "-o",
            str(out),
            "--key",
            str(self.key),
        )

    def verify(self, pack: Path, *options: str) -> tuple[int, str, str]:
        """``evidence verify PACK`` with both keys and OPTIONS."""
        return run("evidence", "verify", str(pack), *self.vkeys, *options)


def officer(tmp_path: Path) -> Officer:
    """Write the compliant history's log under TMP_PATH and make the officer's key."""
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    written = write_log(tmp_path / "log", history.events)
    key = tmp_path / "officer.key"
    signer = generate_key_file(key, "evidence.regsandbox.test/officer")
    vkey = tmp_path / "officer.vkey"
    vkey.write_text(signer.verifier.vkey + "\n")
    return Officer(written, key, vkey)
