"""The OSCAL assessment results of a pack, built with compliance-trestle's models.

One result covering the whole catalogue; per control an observation (the method, the
evidence items linked by their file in the pack) and a finding whose target is the
control's statement, with ``satisfied`` / ``not-satisfied`` as OSCAL's objective status.
OSCAL has no "not applicable" objective state, so such a finding carries no status and
says why in its description; every finding also carries the regsandbox property
``assessment-status`` with one of the three values. Identifiers are derived from the
pack id, so the same evidence always gives the same document.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence

from trestle.oscal.assessment_results import AssessmentResults, ImportAp, Result
from trestle.oscal.common import (
    Finding as OscalFinding,
)
from trestle.oscal.common import (
    FindingTarget,
    Link,
    Metadata,
    ObjectiveStatus,
    Observation,
    OscalVersion,
    Property,
    RelatedObservation,
    RelevantEvidence,
    ReviewedControls,
    SelectControlById,
)

from sandbox.evidence.assess import Finding
from sandbox.evidence.catalog import NS, Control

__all__ = ["MAX_LINKS", "assessment_results"]

MAX_LINKS = 100
"""Supporting items linked per observation; evidence.json lists every one."""


def _uuid(pack_id: str, *parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(["regsandbox-evidence", pack_id, *parts])))


def _href(item: str, files: Mapping[str, str]) -> str:
    return files.get(item, "evidence.json")


def assessment_results(
    pack_id: str,
    generated: dt.datetime,
    title: str,
    controls: Sequence[Control],
    findings: Sequence[Finding],
    files: Mapping[str, str],
) -> bytes:
    """The assessment-results document (JSON bytes). ``files`` maps item id → file."""
    by_control = {c.id: c for c in controls}
    observations: list[Observation] = []
    oscal_findings: list[OscalFinding] = []
    for finding in findings:
        control = by_control[finding.control]
        obs_id = _uuid(pack_id, "observation", finding.control)
        evidence = [
            RelevantEvidence(href=_href(item, files), description=f"{item}: {why}")
            for item, why in finding.violations
        ]
        evidence += [
            RelevantEvidence(href=_href(item, files), description=f"{item}: supports the control")
            for item in finding.supporting[:MAX_LINKS]
        ]
        if len(finding.supporting) > MAX_LINKS:
            evidence.append(
                RelevantEvidence(
                    href="evidence.json",
                    description=(
                        f"all {len(finding.supporting)} supporting items, listed under "
                        f"findings[{finding.control}].supporting"
                    ),
                )
            )
        observations.append(
            Observation(
                uuid=obs_id,
                title=f"Check {finding.check}",
                description=control.evidence,
                methods=["TEST"],
                types=["finding"] if finding.violations else ["control-objective"],
                collected=generated,
                relevant_evidence=evidence or None,
                props=[Property(name="check-id", value=finding.check, ns=NS)],
            )
        )
        status = None
        if finding.status != "not-applicable":
            state = "satisfied" if finding.status == "satisfied" else "not-satisfied"
            status = ObjectiveStatus(state=state, reason="pass" if state == "satisfied" else "fail")
        oscal_findings.append(
            OscalFinding(
                uuid=_uuid(pack_id, "finding", finding.control),
                title=f"{control.label} {control.title}",
                description=finding.reason,
                props=[Property(name="assessment-status", value=finding.status, ns=NS)],
                target=FindingTarget(
                    type="statement-id",
                    target_id=f"{finding.control}_smt",
                    status=status,
                ),
                related_observations=[RelatedObservation(observation_uuid=obs_id)],
            )
        )
    result = Result(
        uuid=_uuid(pack_id, "result"),
        title=title,
        description="Automated assessment of the regsandbox controls from the signed audit log.",
        start=generated,
        end=generated,
        reviewed_controls=ReviewedControls(
            control_selections=[
                {"include_controls": [SelectControlById(control_id=c.id) for c in controls]}
            ]
        ),
        observations=observations,
        findings=oscal_findings,
    )
    document = AssessmentResults(
        uuid=_uuid(pack_id, "assessment-results"),
        metadata=Metadata(
            title=title,
            last_modified=generated,
            version="1",
            oscal_version=OscalVersion("1.1.2"),
            links=[Link(href="catalog.json", rel="reference")],
        ),
        import_ap=ImportAp(
            href="catalog.json",
            remarks="No separate assessment plan: the catalogue names each control's check.",
        ),
        results=[result],
    )
    return (document.oscal_serialize_json(pretty=True, wrapped=True) + "\n").encode()
