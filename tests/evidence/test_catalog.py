"""The control catalogue: valid OSCAL, covers the articles the issue names, all checkable."""

from __future__ import annotations

import json
from pathlib import Path

from trestle.oscal.assessment_results import AssessmentResults
from trestle.oscal.catalog import Catalog

from sandbox.evidence.assess import CHECKS
from sandbox.evidence.catalog import catalog_bytes, load_controls
from tests.evidence.conftest import Packed


def test_catalogue_is_an_oscal_catalog(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_bytes(catalog_bytes())
    catalog = Catalog.oscal_read(path)
    assert catalog is not None
    assert catalog.metadata.oscal_version.root.root == "1.1.2"


def test_every_control_has_an_implemented_check_and_evidence() -> None:
    controls = load_controls()
    assert len({c.id for c in controls}) == len(controls)
    for control in controls:
        assert control.check in CHECKS, control.id
        assert control.evidence
        assert control.statement


def test_the_articles_of_the_issue_are_covered() -> None:
    labels = {(c.regulation.split(" (")[0], c.label) for c in load_controls()}
    for article in ("(d)", "(e)", "(g)", "(h)"):
        assert ("EU AI Act", f"Art. 59(1){article}") in labels
    assert ("European Health Data Space", "Art. 73(1)") in labels
    assert ("General Data Protection Regulation", "Art. 32") in labels
    assert ("General Data Protection Regulation", "Art. 44-46") in labels
    dora = {c.id for c in load_controls() if c.regulation.startswith("DORA")}
    assert dora == {"dora-logging", "dora-tamper", "dora-retention"}


def test_pack_holds_the_catalogue_and_valid_assessment_results(packed: Packed) -> None:
    assert (packed.pack / "catalog.json").read_bytes() == catalog_bytes()
    results = AssessmentResults.oscal_read(packed.pack / "assessment-results.json")
    assert results is not None
    [result] = results.results
    targets = {f.target.target_id for f in result.findings or []}
    assert targets == {f"{c.id}_smt" for c in load_controls()}
    statement_ids = {
        p["id"]
        for g in json.loads(catalog_bytes())["catalog"]["groups"]
        for c in g["controls"]
        for p in c["parts"]
    }
    assert targets <= statement_ids
