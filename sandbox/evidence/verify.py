"""Checking a pack offline: signature, digests, receipts, and every finding recomputed.

Nothing in the pack is trusted until it is tied to a key the caller trusts:

1. ``manifest`` must be a signed note by a trusted key; every file in the pack must be
   listed in it with its sha256, and every listed file must be there;
2. ``checkpoint`` must be signed by a trusted key (the log's) for the log named in
   ``pack.json`` — and, when witness keys are given, cosigned by a quorum of them;
3. every entry must have a receipt that leads to *that* checkpoint and proves the
   entry's exact bytes at its index, and must belong to the pack's scope;
4. the findings, the evidence list, the OSCAL results and the HTML report are derived
   again from the entries and cluster snapshots and must equal the pack's, byte for byte.

Every failed check is reported with the item it concerns (a file, or ``finding <control>``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.errors import AuditError, MalformedError, VerificationError
from audit.merkle import leaf_hash, verify_inclusion
from audit.note import Verifier, open_note
from audit.proof import TlogProof
from audit.witness import CosignatureVerifier
from audit.witnessing import verify_cosigned
from sandbox.evidence.assess import Finding
from sandbox.evidence.collect import Scope
from sandbox.evidence.pack import (
    FORMAT,
    MANIFEST,
    PackInfo,
    derive,
    log_facts,
    receipt_file,
)

__all__ = ["PackReport", "Problem", "verify_pack"]

_LINE = re.compile(r"^([0-9a-f]{64}) ([A-Za-z0-9._-][A-Za-z0-9._/-]*)$")
_ENTRY = re.compile(r"^entries/([0-9]{12})\.json$")


@dataclass(frozen=True)
class Problem:
    """One failed check."""

    item: str
    """What failed: a file in the pack, ``manifest``, or ``finding <control id>``."""
    message: str
    """Why, for a person."""


@dataclass
class PackReport:
    """The outcome of :func:`verify_pack`."""

    problems: list[Problem] = field(default_factory=list)
    """Every failed check; empty when the pack verified."""
    files: int = 0
    """Files whose digest was checked."""
    receipts: int = 0
    """Receipts verified against the checkpoint."""
    info: PackInfo | None = None
    """``pack.json``, once read."""
    witnesses: tuple[str, ...] = ()
    """Witnesses whose cosignatures verified (when witness keys were given)."""
    findings: list[Finding] = field(default_factory=list)
    """The findings as recomputed from the evidence."""

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.problems

    def fail(self, item: str, message: str) -> None:
        """Record a failed check."""
        self.problems.append(Problem(item, message))

    def to_json(self) -> dict[str, Any]:
        """JSON form for ``-o json``."""
        info = self.info
        return {
            "ok": self.ok,
            "pack": json.loads(info.to_bytes()) if info else None,
            "checked": {"files": self.files, "receipts": self.receipts},
            "witnesses": list(self.witnesses),
            "problems": [{"item": p.item, "message": p.message} for p in self.problems],
            "findings": [f.to_json() for f in self.findings],
        }


def _manifest(root: Path, verifiers: Sequence[Verifier], report: PackReport) -> dict[str, str]:
    try:
        data = (root / MANIFEST).read_bytes()
    except FileNotFoundError:
        report.fail(MANIFEST, "the pack has no manifest")
        return {}
    try:
        note, _ = open_note(data, verifiers)
    except (VerificationError, MalformedError) as exc:
        report.fail(MANIFEST, f"signature does not verify with the trusted key(s): {exc}")
        return {}
    lines = note.text[:-1].split("\n")
    if len(lines) < 2 or lines[0] != FORMAT:
        report.fail(MANIFEST, f"not a pack manifest (first line must be {FORMAT})")
        return {}
    digests: dict[str, str] = {"": lines[1]}
    for number, line in enumerate(lines[2:], start=3):
        match = _LINE.match(line)
        if match is None or ".." in match.group(2).split("/"):
            report.fail(MANIFEST, f"line {number} is not '<sha256> <path>'")
            return {}
        digests[match.group(2)] = match.group(1)
    return digests


# A pack holds two files per entry (200,000 for 100,000 entries): plain os paths here,
# pathlib objects per file cost seconds.
def _listing(root: Path) -> tuple[set[str], set[str]]:
    """Regular files and anything else (links, devices) under ``root``, relative paths."""
    files: set[str] = set()
    other: set[str] = set()
    for top, dirs, names in os.walk(root):
        rel = Path(top).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        for name in names:
            path = os.path.join(top, name)  # noqa: PTH118 -- speed, see above
            (files if stat.S_ISREG(os.lstat(path).st_mode) else other).add(prefix + name)
        links = (d for d in dirs if os.path.islink(os.path.join(top, d)))  # noqa: PTH114,PTH118
        other.update(prefix + d for d in links)
    return files, other


def _files(root: Path, digests: dict[str, str], report: PackReport) -> dict[str, bytes]:
    on_disk, odd = _listing(root)
    on_disk.discard(MANIFEST)
    contents: dict[str, bytes] = {}
    for path in sorted(odd):
        report.fail(path, "is not a regular file (links are not followed)")
    for path in sorted(on_disk - digests.keys()):
        report.fail(path, "is not in the signed manifest")
    for path in sorted(digests):
        if not path or path in odd:
            continue
        if path not in on_disk:
            report.fail(path, "is listed in the signed manifest but missing from the pack")
            continue
        with open(os.path.join(root, path), "rb") as f:  # noqa: PTH118,PTH123 -- speed
            data = f.read()
        report.files += 1
        if hashlib.sha256(data).hexdigest() != digests[path]:
            report.fail(path, "its sha256 differs from the signed manifest (altered)")
            continue
        contents[path] = data
    return contents


def _info(contents: dict[str, bytes], pack_id: str, report: PackReport) -> PackInfo | None:
    try:
        doc = json.loads(contents["pack.json"])
        log = doc["log"]
        info = PackInfo(
            pack_id=str(doc["packId"]),
            generated=str(doc["generated"]),
            scope=Scope.from_json(doc["scope"]),
            origin=str(log["origin"]),
            size=int(log["size"]),
        )
    except (KeyError, TypeError, ValueError, MalformedError) as exc:
        report.fail("pack.json", f"missing or not a pack description: {exc}")
        return None
    if doc.get("format") != FORMAT or info.to_bytes() != contents["pack.json"]:
        report.fail("pack.json", "is not in this version's canonical form")
    if info.pack_id != pack_id:
        report.fail("pack.json", "its pack id is not the one the manifest signs")
    return info


def _checkpoint(
    contents: dict[str, bytes],
    info: PackInfo,
    verifiers: Sequence[Verifier],
    witnesses: Sequence[CosignatureVerifier],
    quorum: int,
    report: PackReport,
) -> Checkpoint | None:
    note = contents.get("checkpoint")
    if note is None:
        report.fail("checkpoint", "missing")
        return None
    try:
        if witnesses:
            checkpoint, report.witnesses = verify_cosigned(
                note, verifiers, witnesses, quorum, origin=info.origin
            )
        else:
            checkpoint = open_checkpoint(note, verifiers, origin=info.origin)
    except (VerificationError, MalformedError) as exc:
        report.fail("checkpoint", f"does not verify: {exc}")
        return None
    if checkpoint.size != info.size:
        report.fail("checkpoint", f"has size {checkpoint.size}, pack.json says {info.size}")
    return checkpoint


def _entries(
    contents: dict[str, bytes],
    info: PackInfo,
    checkpoint: Checkpoint,
    note: bytes,
    report: PackReport,
) -> tuple[list[tuple[int, bytes]], list[dict[str, Any]]]:
    entries: list[tuple[int, bytes]] = []
    docs: list[dict[str, Any]] = []
    for path in sorted(contents):
        match = _ENTRY.match(path)
        if match is None:
            continue
        index, data = int(match.group(1)), contents[path]
        proof_path = receipt_file(index)
        proof_bytes = contents.get(proof_path)
        if proof_bytes is None:
            report.fail(path, f"has no intact receipt ({proof_path})")
            continue
        try:
            proof = TlogProof.parse(proof_bytes)
            if proof.index != index:
                raise VerificationError(f"it proves index {proof.index}, not {index}")
            if proof.checkpoint != note:
                raise VerificationError("it leads to another checkpoint than the pack's")
            verify_inclusion(
                leaf_hash(data), index, checkpoint.size, list(proof.hashes), checkpoint.root
            )
        except (VerificationError, MalformedError) as exc:
            report.fail(proof_path, f"does not prove entry {index} in the checkpoint: {exc}")
            continue
        report.receipts += 1
        try:
            doc = json.loads(data)
        except ValueError:
            report.fail(path, "is not JSON")
            continue
        if not isinstance(doc, dict) or doc.get("index") != index:
            report.fail(path, f"does not carry index {index}")
            continue
        if not info.scope.covers(doc):
            report.fail(path, "is outside the pack's scope (another tenant, sandbox or time)")
            continue
        entries.append((index, data))
        docs.append(doc)
    receipts = {p for p in contents if p.startswith("receipts/")}
    orphans = receipts - {receipt_file(i) for i, _ in entries}
    for path in sorted(orphans):
        entry = path.replace("receipts/", "entries/").replace(".tlog-proof", ".json")
        if entry not in contents and not any(p.item == entry for p in report.problems):
            report.fail(path, f"is a receipt without its entry ({entry})")
    return entries, docs


def _cluster(contents: dict[str, bytes], report: PackReport) -> dict[str, dict[str, Any]]:
    cluster: dict[str, dict[str, Any]] = {}
    for path in sorted(contents):
        if path.startswith("cluster/") and path.endswith(".json"):
            try:
                cluster[path[len("cluster/") : -len(".json")]] = json.loads(contents[path])
            except ValueError:
                report.fail(path, "is not JSON")
    return cluster


def _findings(contents: dict[str, bytes], recomputed: list[Finding], report: PackReport) -> None:
    try:
        claimed = {f["control"]: f for f in json.loads(contents["evidence.json"])["findings"]}
    except (KeyError, TypeError, ValueError):
        report.fail("evidence.json", "missing or holds no findings")
        return
    for finding in recomputed:
        claim = claimed.pop(finding.control, None)
        if claim is None:
            report.fail(f"finding {finding.control}", "the pack has no finding for this control")
        elif claim != finding.to_json():
            report.fail(
                f"finding {finding.control}",
                f"the pack claims {claim.get('status')!r} ({claim.get('reason')}); the evidence "
                f"gives {finding.status!r} ({finding.reason})",
            )
    for control in sorted(claimed):
        report.fail(f"finding {control}", "is not a control of the catalogue")


def verify_pack(
    root: Path,
    verifiers: Sequence[Verifier],
    *,
    witnesses: Sequence[CosignatureVerifier] = (),
    quorum: int = 0,
) -> PackReport:
    """Verify the pack in directory ``root`` against trusted keys; never raises for a bad
    pack (every failure is in the report). ``verifiers`` must hold the key that signed
    the manifest and the log's key; ``witnesses`` and ``quorum`` optionally require
    witness cosignatures on the checkpoint.
    """
    report = PackReport()
    if not root.is_dir():
        report.fail(str(root), "is not a directory")
        return report
    digests = _manifest(root, verifiers, report)
    if not digests:
        return report
    contents = _files(root, digests, report)
    info = _info(contents, digests[""], report) if "pack.json" in contents else None
    report.info = info
    if info is None:
        if "pack.json" not in contents and not report.problems:
            report.fail("pack.json", "missing")
        return report
    checkpoint = _checkpoint(contents, info, verifiers, witnesses, quorum, report)
    if checkpoint is None:
        return report
    entries, docs = _entries(contents, info, checkpoint, contents["checkpoint"], report)
    cluster = _cluster(contents, report)
    log = log_facts(info.origin, info.size, contents["checkpoint"], len(entries))
    try:
        derived = derive(info, entries, cluster, log, docs)
    except (AuditError, ValueError, KeyError, TypeError) as exc:
        report.fail("evidence", f"the findings cannot be recomputed: {exc}")
        return report
    report.findings = derived.findings
    _findings(contents, derived.findings, report)
    for path, data in derived.files.items():
        if path in contents and contents[path] != data:
            report.fail(path, "differs from what the evidence in the pack gives")
    return report
