"""Writing an evidence pack: a directory whose manifest of file digests is a signed note.

Layout (every path is listed, with its sha256, in ``manifest``)::

    manifest                    C2SP signed note: format line, pack id, "<sha256> <path>" lines
    pack.json                   format, pack id, generation time, scope, log origin and size
    checkpoint                  the ONE signed checkpoint every receipt leads to
    entries.ndjson              every audit entry in scope, its exact logged bytes, one a
                                line, in index order (entries are canonical JSON: no newline)
    receipts                    one batch receipt proving every entry against ``checkpoint``
                                (:mod:`sandbox.evidence.receipts`)
    cluster/<namespace>.json    isolation objects read from the cluster (with --kubeconfig)
    catalog.json                the OSCAL control catalogue the findings refer to
    evidence.json               the evidence items and every finding with all its items
    assessment-results.json     OSCAL assessment results
    report.html                 the report for people
    report.pdf                  the same, printed by a headless Chromium (only with ``pdf``)
    log.vkey                    the log's verifier key as found (a hint: trust your own copy)

``evidence.json``, ``assessment-results.json`` and ``report.html`` are *derived*: a pure
function (:func:`derive`) of the entries, the cluster snapshots and ``pack.json``.
Verification derives them again and compares bytes.

An entry is named ``entries.ndjson#<index>`` and its part of the receipt
``receipts#<index>``, in the findings, the OSCAL links and every verification problem.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.canonical import canonical_json
from audit.log import VKEY_FILE
from audit.note import Note, Signer, sign_note
from sandbox.evidence._gc import cycle_collection_paused
from sandbox.evidence.assess import (
    Finding,
    LogFacts,
    Record,
    assess,
    entry_item,
    isolation_item,
)
from sandbox.evidence.catalog import catalog_bytes, load_controls
from sandbox.evidence.collect import Collected, Scope, time_text
from sandbox.evidence.oscal import assessment_results
from sandbox.evidence.report import render_report

__all__ = [
    "ENTRIES",
    "FORMAT",
    "MANIFEST",
    "RECEIPTS",
    "Derived",
    "PackInfo",
    "categories",
    "cluster_file",
    "derive",
    "entry_file",
    "log_facts",
    "manifest_text",
    "receipt_file",
    "write_pack",
]

FORMAT = "regsandbox.io/evidence-pack/v2"
"""First line of every manifest, and ``format`` in ``pack.json``."""

MANIFEST = "manifest"
"""File name of the signed manifest."""

ENTRIES = "entries.ndjson"
"""File of the entries, one a line."""

RECEIPTS = "receipts"
"""File of the batch receipt."""


def entry_file(index: int) -> str:
    """Name of entry ``index`` inside a pack: its line in :data:`ENTRIES`."""
    return f"{ENTRIES}#{index}"


def receipt_file(index: int) -> str:
    """Name of the receipt of entry ``index``: its ``leaf`` line in :data:`RECEIPTS`."""
    return f"{RECEIPTS}#{index}"


def cluster_file(namespace: str) -> str:
    """Path of the cluster snapshot of ``namespace`` inside a pack."""
    return f"cluster/{namespace}.json"


@dataclass(frozen=True)
class PackInfo:
    """What ``pack.json`` records."""

    pack_id: str
    """Random UUID of this pack."""
    generated: str
    """When it was made (entry time format)."""
    scope: Scope
    """What it covers."""
    origin: str
    """The audit log's origin."""
    size: int
    """The checkpoint's tree size."""

    def to_bytes(self) -> bytes:
        """``pack.json``, canonical JSON."""
        return canonical_json(
            {
                "format": FORMAT,
                "packId": self.pack_id,
                "generated": self.generated,
                "scope": self.scope.to_json(),
                "log": {"origin": self.origin, "size": self.size},
            }
        )


def categories(rec: Record) -> list[str]:
    """What kind of evidence an entry is, for people and for filtering."""
    action, found = rec.action, []
    if rec.decision is not None:
        found.append("policy-decision")
    if action == "dataset.granted":
        found.append("grant")
    elif action == "dataset.revoked":
        found.append("revocation")
    elif action == "dataset.read":
        found.append("dataset-read")
    elif action.startswith("model.export."):
        found.append("export")
    elif action == "key.destroyed":
        found.append("key-destruction")
    if action == "sandbox.provisioned":
        found += ["isolation", "key-creation"]
    elif action in ("sandbox.drift.corrected", "sandbox.quarantined"):
        found.append("isolation")
    return found


def log_facts(origin: str, size: int, checkpoint: bytes, receipts: int) -> LogFacts:
    """The facts about the log a pack's findings rest on (cosigners as named, unverified)."""
    names = sorted({s.name for s in Note.parse(checkpoint).signatures if s.name != origin})
    return LogFacts(origin, size, receipts, tuple(names))


@dataclass(frozen=True)
class Derived:
    """The derived files and the findings they show."""

    files: dict[str, bytes]
    """Path → bytes of evidence.json, assessment-results.json, report.html."""
    findings: list[Finding]
    """One per control."""


def derive(
    info: PackInfo,
    entries: Sequence[tuple[int, bytes]],
    cluster: Mapping[str, Mapping[str, Any]],
    log: LogFacts,
    docs: Sequence[Mapping[str, Any]] | None = None,
) -> Derived:
    """Compute the findings and render the derived files from the evidence.

    ``docs``, if given, are the entries already parsed (same order), to save a parse.
    """
    if docs is None:
        docs = [json.loads(data) for _, data in entries]
    records = [Record(index, doc) for (index, _), doc in zip(entries, docs, strict=True)]
    controls = load_controls()
    findings = assess(records, cluster, log, controls)
    files = {entry_item(i): entry_file(i) for i, _ in entries}
    files.update({isolation_item(ns): cluster_file(ns) for ns in cluster})
    items: list[dict[str, Any]] = []
    for rec, (_, data) in zip(records, entries, strict=True):
        decision = rec.decision or {}
        items.append(
            {
                "id": rec.item,
                "kind": "audit-entry",
                "file": entry_file(rec.index),
                "receipt": receipt_file(rec.index),
                "sha256": hashlib.sha256(data).hexdigest(),
                "time": rec.doc.get("time"),
                "action": rec.action,
                "categories": categories(rec),
                "policyDigest": decision.get("policy_digest"),
            }
        )
    for namespace in sorted(cluster):
        items.append(
            {
                "id": isolation_item(namespace),
                "kind": "cluster-snapshot",
                "file": cluster_file(namespace),
            }
        )
    evidence = {
        "pack": json.loads(info.to_bytes()),
        "items": items,
        "findings": [f.to_json() for f in findings],
    }
    title = f"Evidence pack for tenant {info.scope.tenant}" + (
        f", sandbox {info.scope.sandbox}" if info.scope.sandbox else ""
    )
    generated = dt.datetime.strptime(info.generated, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return Derived(
        files={
            "evidence.json": _evidence_json(evidence),
            "assessment-results.json": assessment_results(
                info.pack_id, generated, title, controls, findings, files
            ),
            "report.html": render_report(
                info.scope, info.generated, log, controls, findings, records, cluster
            ),
        },
        findings=findings,
    )


def _evidence_json(evidence: Mapping[str, Any]) -> bytes:
    """One item or finding per line: readable, diffable, and fast to write (C encoder)."""
    dump = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode
    lines = ['{"pack":' + dump(evidence["pack"]) + ',"items":[']
    for key in ("items", "findings"):
        values = evidence[key]
        lines += [dump(v) + ("," if i < len(values) - 1 else "") for i, v in enumerate(values)]
        lines.append('],"findings":[' if key == "items" else "]}")
    return ("\n".join(lines) + "\n").encode()


def manifest_text(pack_id: str, digests: Mapping[str, str]) -> str:
    """The manifest's note text: format, pack id, then ``<sha256> <path>`` sorted by path."""
    lines = [FORMAT, pack_id, *(f"{digests[p]} {p}" for p in sorted(digests))]
    return "\n".join(lines) + "\n"


def _write(root: Path, path: str, data: bytes, digests: dict[str, str]) -> None:
    target = root / path
    target.write_bytes(data)
    digests[path] = hashlib.sha256(data).hexdigest()


@cycle_collection_paused()
def write_pack(
    found: Collected,
    out: Path,
    signer: Signer,
    *,
    now: dt.datetime | None = None,
    log_vkey: bytes | None = None,
    pdf: bool = False,
) -> tuple[PackInfo, list[Finding]]:
    """Write the pack for ``found`` into the new directory ``out`` and sign its manifest.

    Refuses an existing non-empty directory (a pack is never written over another).
    With ``pdf``, ``report.html`` is also printed to ``report.pdf`` before the manifest is
    signed (raises :class:`~sandbox.evidence.pdf.PdfError` if it cannot be; the
    directory is then left without a manifest, which no verifier accepts).
    """
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory")
    info = PackInfo(
        pack_id=str(uuid.uuid4()),
        generated=time_text(now or dt.datetime.now(dt.UTC)),
        scope=found.scope,
        origin=found.origin,
        size=found.size,
    )
    out.mkdir(parents=True, exist_ok=True)
    if found.cluster:
        (out / "cluster").mkdir()
    digests: dict[str, str] = {}
    _write(out, "pack.json", info.to_bytes(), digests)
    _write(out, "checkpoint", found.checkpoint, digests)
    _write(out, "catalog.json", catalog_bytes(), digests)
    if log_vkey is not None:
        _write(out, VKEY_FILE, log_vkey, digests)
    for index, data in found.entries:
        if b"\n" in data:
            raise ValueError(f"entry {index} holds a newline; it cannot be one line")
    _write(out, ENTRIES, b"".join(data + b"\n" for _, data in found.entries), digests)
    _write(out, RECEIPTS, found.receipt, digests)
    for namespace, snapshot in found.cluster.items():
        _write(out, cluster_file(namespace), canonical_json(snapshot), digests)
    log = log_facts(found.origin, found.size, found.checkpoint, len(found.entries))
    docs = found.docs if len(found.docs) == len(found.entries) else None
    derived = derive(info, found.entries, found.cluster, log, docs)
    for path, data in derived.files.items():
        _write(out, path, data, digests)
    if pdf:
        from sandbox.evidence.pdf import print_pdf

        print_pdf(out / "report.html", out / "report.pdf")
        digests["report.pdf"] = hashlib.sha256((out / "report.pdf").read_bytes()).hexdigest()
    note = sign_note(manifest_text(info.pack_id, digests), [signer])
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_bytes(note)
    tmp.replace(out / MANIFEST)
    return info, derived.findings
