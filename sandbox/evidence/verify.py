"""Checking a pack offline: signature, digests, receipts, and every finding recomputed.

Nothing in the pack is trusted until it is tied to a key the caller trusts:

1. ``manifest`` must be a signed note by a trusted key; every file in the pack must be
   listed in it with its sha256, and every listed file must be there;
2. ``checkpoint`` must be signed by a trusted key (the log's) for the log named in
   ``pack.json`` — and, when witness keys are given, cosigned by a quorum of them;
3. the batch receipt must lead to *that* checkpoint and prove every entry's exact bytes
   at its index (one walk over the tree, see :mod:`sandbox.evidence.receipts`), and every
   entry must belong to the pack's scope;
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
from audit.merkle import leaf_hash
from audit.note import Verifier, open_note
from audit.witness import CosignatureVerifier
from audit.witnessing import verify_cosigned
from sandbox.evidence._gc import cycle_collection_paused
from sandbox.evidence.assess import Finding
from sandbox.evidence.collect import Scope
from sandbox.evidence.pack import (
    ENTRIES,
    FORMAT,
    MANIFEST,
    RECEIPTS,
    PackInfo,
    derive,
    entry_file,
    log_facts,
    receipt_file,
)
from sandbox.evidence.receipts import BatchReceipt

__all__ = ["PackReport", "Problem", "verify_pack"]

_LINE = re.compile(r"^([0-9a-f]{64}) ([A-Za-z0-9._-][A-Za-z0-9._/-]*)$")


@dataclass(frozen=True)
class Problem:
    """One failed check."""

    item: str
    """What failed: a file in the pack, ``manifest``, an entry (``entries.ndjson#<index>``)
    or its leaf in the receipt (``receipts#<index>``), or ``finding <control id>``."""
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
            if path not in (ENTRIES, RECEIPTS):
                continue
            # Still read: each entry is checked against the signed checkpoint on its own,
            # which names the altered entries (the pack fails either way).
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


def _lines(data: bytes, report: PackReport) -> dict[int, tuple[bytes, dict[str, Any]]]:
    """The entries of ``entries.ndjson`` by the index each carries."""
    found: dict[int, tuple[bytes, dict[str, Any]]] = {}
    if data and not data.endswith(b"\n"):
        report.fail(ENTRIES, "does not end with a newline (cut short?)")
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            doc = json.loads(line)
            index = doc["index"] if isinstance(doc, dict) else None
        except (ValueError, KeyError):
            index = None
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            report.fail(f"{ENTRIES} line {number}", "is not an audit entry with an index")
        elif index in found:
            report.fail(entry_file(index), f"appears twice (line {number} again)")
        else:
            found[index] = (line, doc)
    return found


def _entries(
    contents: dict[str, bytes],
    info: PackInfo,
    checkpoint: Checkpoint,
    note: bytes,
    report: PackReport,
) -> tuple[list[tuple[int, bytes]], list[dict[str, Any]]]:
    """Every entry proven by the batch receipt, in scope, with its parsed form."""
    if ENTRIES not in contents or RECEIPTS not in contents:
        for path in (ENTRIES, RECEIPTS):
            if path not in contents and not any(p.item == path for p in report.problems):
                report.fail(path, "missing")
        return [], []
    lines = _lines(contents[ENTRIES], report)
    try:
        receipt = BatchReceipt.parse(contents[RECEIPTS])
    except MalformedError as exc:
        report.fail(RECEIPTS, f"is not a batch receipt: {exc}")
        return [], []
    if receipt.checkpoint != note:
        report.fail(RECEIPTS, "leads to another checkpoint than the pack's")
        return [], []
    listed = dict(zip(receipt.indices, receipt.leaves, strict=True))
    for index in sorted(lines.keys() - listed.keys()):
        report.fail(entry_file(index), "has no receipt (the receipt proves no such index)")
    for index in sorted(listed.keys() - lines.keys()):
        report.fail(entry_file(index), "is missing: the receipt proves it, the pack lacks it")
    # The hash of each entry as found; an index without its entry keeps the listed hash.
    actual = [
        leaf_hash(lines[i][0]) if i in lines else leaf
        for i, leaf in zip(receipt.indices, receipt.leaves, strict=True)
    ]
    differ = [i for i, h in zip(receipt.indices, actual, strict=True) if h != listed[i]]
    try:
        proven = receipt.root(checkpoint.size) == checkpoint.root
        if not proven and differ and receipt.root(checkpoint.size, actual) == checkpoint.root:
            # The entries lead to the checkpoint; the leaf lines that differ were altered.
            for index in differ:
                report.fail(receipt_file(index), f"does not hold the hash of entry {index}")
            differ = []
        elif not proven:
            report.fail(
                RECEIPTS, f"does not lead to the checkpoint's root (size {checkpoint.size})"
            )
            return [], []
    except VerificationError as exc:
        report.fail(RECEIPTS, f"does not fit the checkpoint's tree: {exc}")
        return [], []
    for index in differ:  # the leaf lines are proven: these entries were altered
        report.fail(entry_file(index), "its bytes are not the entry its receipt proves (altered)")
    bad = set(differ) | {i for i in receipt.indices if i not in lines}
    entries: list[tuple[int, bytes]] = []
    docs: list[dict[str, Any]] = []
    for index in receipt.indices:
        if index in bad or index not in lines:
            continue
        data, doc = lines[index]
        report.receipts += 1
        if not info.scope.covers(doc):
            report.fail(
                entry_file(index), "is outside the pack's scope (another tenant, sandbox or time)"
            )
            continue
        entries.append((index, data))
        docs.append(doc)
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


@cycle_collection_paused()
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
    if contents.get("evidence.json") != derived.files["evidence.json"]:
        _findings(contents, derived.findings, report)  # name each finding that differs
    for path, data in derived.files.items():
        if path in contents and contents[path] != data:
            report.fail(path, "differs from what the evidence in the pack gives")
    return report
