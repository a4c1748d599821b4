"""Fixtures of the evidence-pack tests: a two-tenant log and a pack of one tenant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from audit.note import Signer
from audit.signing import write_vkey_file
from sandbox.evidence.collect import Scope, collect
from sandbox.evidence.pack import write_pack
from tests.evidence.history import History, Written, compliant, write_log


@dataclass
class Packed:
    """A log, a pack of one tenant, and the keys a supervisor would trust."""

    log: Written
    pack: Path
    officer: Signer
    officer_vkey: Path

    @property
    def vkeys(self) -> list[str]:
        """The --vkey values a supervisor passes: the officer's and the log's."""
        return [str(self.officer_vkey), str(self.log.vkey)]


def make_pack(tmp: Path, history: History, scope: Scope, *, name: str = "pack") -> Packed:
    """Write ``history`` to a log, pack ``scope``, return everything."""
    written = write_log(tmp / f"{name}-log", history.events)
    officer = Signer.generate("evidence.regsandbox.test/officer")
    vkey = tmp / f"{name}-officer.vkey"
    write_vkey_file(vkey, officer.verifier)
    found = collect(written.path, scope)
    write_pack(found, tmp / name, officer, log_vkey=written.vkey.read_bytes())
    return Packed(written, tmp / name, officer, vkey)


@pytest.fixture
def two_tenants() -> History:
    """bank-a and hospital-b each run a compliant sandbox, interleaved in one log."""
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    compliant(history, "hospital-b", "oncology", "tumour-scans", reads=4)
    return history


@pytest.fixture
def packed(tmp_path: Path, two_tenants: History) -> Packed:
    """A pack of tenant bank-a."""
    return make_pack(tmp_path, two_tenants, Scope("bank-a"))
