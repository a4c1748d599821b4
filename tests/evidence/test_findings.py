"""Histories that break a control give "not-satisfied" with the entry that shows it.

Derived from the articles: a read after the sandbox ended (AI Act 59(1)(e)/EHDS 73(1)
access), a release with fewer distinct reviewers than policy required (59(1)(e)), a
sandbox ended without its key destroyed (59(1)(g)), and the report and OSCAL results say so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trestle.oscal.assessment_results import AssessmentResults

from audit.signing import load_verifier
from sandbox.evidence.assess import Finding
from sandbox.evidence.collect import Scope
from sandbox.evidence.verify import verify_pack
from tests.evidence.conftest import Packed, make_pack
from tests.evidence.history import History


def _packed_findings(tmp_path: Path, history: History) -> tuple[Packed, dict[str, Finding]]:
    packed = make_pack(tmp_path, history, Scope("bank-a"))
    report = verify_pack(packed.pack, [load_verifier(Path(v)) for v in packed.vkeys])
    assert report.ok, report.problems  # a breach is a finding, not a broken pack
    return packed, {f.control: f for f in report.findings}


def _index(history: History, action: str, nth: int = -1) -> int:
    return [i for i, e in enumerate(history.events) if e.action == action][nth]


def test_read_after_expiry(tmp_path: Path) -> None:
    history = History()
    key = history.provision("bank-a", "fraud", "card-claims")
    history.read("bank-a", "fraud", "card-claims")
    history.expire("bank-a", "fraud", "card-claims", key)
    history.read("bank-a", "fraud", "card-claims", streamed=False)
    late = len(history.events) - 1
    _, findings = _packed_findings(tmp_path, history)
    finding = findings["ehds-73-1-access"]
    assert finding.status == "not-satisfied"
    assert finding.violations == (
        (f"entry-{late}", "bank-a/fraud read card-claims after the sandbox ended"),
    )
    assert findings["aia-59-1-g"].status == "satisfied"


def test_read_after_revocation(tmp_path: Path) -> None:
    history = History()
    history.provision("bank-a", "fraud", "card-claims")
    history.operator(
        "dataset.revoked",
        "bank-a",
        "fraud",
        details={"dataset": "card-claims", "why": "no longer requested"},
    )
    history.read("bank-a", "fraud", "card-claims", streamed=False)
    _, findings = _packed_findings(tmp_path, history)
    [(item, why)] = findings["ehds-73-1-access"].violations
    assert item == f"entry-{len(history.events) - 1}"
    assert "without a grant in force" in why


def test_export_released_without_k_reviewers(tmp_path: Path) -> None:
    history = History()
    key = history.provision("bank-a", "fraud", "card-claims")
    history.export("bank-a", "fraud", reviewers=("bob",), required=2)
    history.expire("bank-a", "fraud", "card-claims", key)
    released = _index(history, "model.export.released")
    _, findings = _packed_findings(tmp_path, history)
    finding = findings["aia-59-1-e"]
    assert finding.status == "not-satisfied"
    [(item, why)] = finding.violations
    assert item == f"entry-{released}"
    assert "1 distinct approval(s), 2 required" in why


def test_export_approved_by_its_requester(tmp_path: Path) -> None:
    history = History()
    history.provision("bank-a", "fraud", "card-claims")
    history.export("bank-a", "fraud", reviewers=("alice", "bob"), required=2)
    _, findings = _packed_findings(tmp_path, history)
    [(_, why)] = findings["aia-59-1-e"].violations
    assert "approved their own export" in why


def test_export_of_another_artifact_than_checked(tmp_path: Path) -> None:
    history = History()
    history.provision("bank-a", "fraud", "card-claims")
    history.export("bank-a", "fraud", released_sha="99" * 32)
    _, findings = _packed_findings(tmp_path, history)
    assert findings["ehds-73-1-download"].status == "not-satisfied"


def test_key_never_destroyed(tmp_path: Path) -> None:
    history = History()
    history.provision("bank-a", "fraud", "card-claims")
    history.expire("bank-a", "fraud", "card-claims", None)
    expired = _index(history, "sandbox.expired")
    packed, findings = _packed_findings(tmp_path, history)
    finding = findings["aia-59-1-g"]
    assert finding.status == "not-satisfied"
    [(item, why)] = finding.violations
    assert item == f"entry-{expired}"
    assert "ended without destroying key local:sbx-bank-a-fraud" in why
    # The OSCAL results and the report carry the same verdict and entry.
    results = AssessmentResults.oscal_read(packed.pack / "assessment-results.json")
    assert results is not None
    [result] = results.results
    oscal = {f.target.target_id: f for f in result.findings or []}
    target = oscal["aia-59-1-g_smt"].target
    assert target.status is not None
    assert target.status.state.value == "not-satisfied"
    observations = {o.uuid: o for o in result.observations or []}
    [related] = oscal["aia-59-1-g_smt"].related_observations or []
    hrefs = [e.href for e in observations[related.observation_uuid].relevant_evidence or []]
    assert f"entries.ndjson#{expired}" in hrefs
    html = (packed.pack / "report.html").read_text()
    assert f"entry-{expired}" in html
    # entry references point at lines of the pack's entries.ndjson
    lines = (packed.pack / "entries.ndjson").read_bytes().splitlines()
    held = {json.loads(line)["index"] for line in lines}
    pointed = {int(n) for n in re.findall(r'title="entries\.ndjson#([0-9]+)"', html)}
    assert pointed
    assert pointed <= held
    assert "Not satisfied" in html


def test_running_sandbox_makes_deletion_not_applicable(tmp_path: Path) -> None:
    history = History()
    history.provision("bank-a", "fraud", "card-claims")
    history.read("bank-a", "fraud", "card-claims")
    packed, findings = _packed_findings(tmp_path, history)
    finding = findings["aia-59-1-g"]
    assert finding.status == "not-applicable"
    assert "still running: bank-a/fraud" in finding.reason
    assert findings["aia-59-1-e"].status == "not-applicable"
    evidence = json.loads((packed.pack / "evidence.json").read_bytes())
    kinds = {c for item in evidence["items"] for c in item.get("categories", [])}
    assert {"grant", "key-creation", "dataset-read", "policy-decision"} <= kinds


def test_history_cut_before_provisioning_is_not_retained(tmp_path: Path) -> None:
    history = History()
    history.read("bank-a", "fraud", "card-claims")
    _, findings = _packed_findings(tmp_path, history)
    assert findings["dora-retention"].status == "not-satisfied"
    assert findings["ehds-73-1-access"].status == "not-satisfied"


def test_report_escapes_what_workloads_and_people_wrote(tmp_path: Path) -> None:
    """Dataset paths, comments and reasons come from users: the report shows them as text."""
    history = History()
    key = history.provision("bank-a", "fraud", "card-claims")
    history.read("bank-a", "fraud", "<script>alert(1)</script>", streamed=False)
    history.expire("bank-a", "fraud", "card-claims", key)
    packed, findings = _packed_findings(tmp_path, history)
    assert findings["ehds-73-1-access"].status == "not-satisfied"
    html = (packed.pack / "report.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
