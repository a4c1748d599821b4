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
    assert len(files) > 20
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
    actions = [
        json.loads(p.read_bytes())["action"] for p in sorted((packed.pack / "entries").iterdir())
    ]
    assert actions.count("dataset.read") == 1
    assert "dataset.granted" in actions  # lifecycle entries before the window are kept
    assert "not-satisfied" not in {f.status for f in report.findings}


def test_an_entry_outside_the_scope_fails_verify(tmp_path: Path, two_tenants: History) -> None:
    """A signer who slips another tenant's entry (with its valid receipt) in is caught."""
    import shutil

    from tests.evidence.test_pack_verify import _resign

    a = make_pack(tmp_path, two_tenants, Scope("bank-a"), name="a")
    # the same log, packed for hospital-b with the same keys
    from sandbox.evidence.collect import collect
    from sandbox.evidence.pack import write_pack

    write_pack(collect(a.log.path, Scope("hospital-b")), tmp_path / "b", a.officer)
    stolen = sorted((tmp_path / "b" / "entries").iterdir())[0]
    shutil.copy(stolen, a.pack / "entries" / stolen.name)
    shutil.copy(
        tmp_path / "b" / "receipts" / stolen.name.replace(".json", ".tlog-proof"),
        a.pack / "receipts",
    )
    _resign(a)
    report = verify_pack(a.pack, [load_verifier(Path(v)) for v in a.vkeys])
    assert f"entries/{stolen.name}" in [p.item for p in report.problems], report.problems
