"""Archive the audit log to S3 with Object Lock, write-once, and check the archive.

Objects are immutable: each is written once with ``If-None-Match: *``; a retry that finds
identical bytes already there is success, different bytes raise
:class:`ArchiveConflictError`. The bucket is created with Object Lock enabled and a
default retention in COMPLIANCE mode, so no one, root included, can delete or overwrite
an object before its retention ends.

Layout under an optional key prefix (entries are grouped in bundles of
:data:`BUNDLE_SIZE`, each entry followed by ``\\n``; a bundle that is not full yet is
written under a ``.p/<width>`` name, as C2SP tlog-tiles does for partial tiles, so that
no name ever gets two contents)::

    entries/0000000000000000          entries 0-255
    entries/0000000000000001.p/17     entries 256-272 (a partial bundle of 17)
    checkpoints/00000000000000000273  the signed checkpoint of size 273

Checkpoints are written after the entries they cover, so the largest archived
checkpoint tells an archiver where to resume (:meth:`S3Archive.latest_checkpoint`).

:meth:`S3Archive.verify` checks the archive against a log; :meth:`S3Archive.verify_archive`
checks the archive on its own (the log may be gone): every bundle re-hashed into the
signed checkpoints, every object version still under COMPLIANCE retention, gaps, and
objects written over or hidden after they were archived.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.entry import entry_index_hint
from audit.errors import AuditError, MalformedError, VerificationError
from audit.merkle import CompactRange, leaf_hash
from audit.note import Note, Verifier

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = [
    "BUNDLE_SIZE",
    "ArchiveConflictError",
    "ArchiveError",
    "ArchiveFinding",
    "ArchiveReport",
    "ArchiveSource",
    "ArchiveVerification",
    "S3Archive",
    "bundle_bytes",
    "bundle_key",
    "checkpoint_key",
]

BUNDLE_SIZE = 256
"""Entries per full bundle object."""

_BUNDLE_RE = re.compile(r"entries/(\d{16})(?:\.p/(\d+))?")
_CHECKPOINT_RE = re.compile(r"checkpoints/(\d{20})")
_CONFLICT_RETRIES = 5


class ArchiveError(AuditError):
    """The archive cannot be written or read as asked (bucket settings, S3 errors)."""


class ArchiveConflictError(ArchiveError):
    """An object already holds different bytes than the ones being archived."""


class ArchiveSource(Protocol):
    """What archiving reads from a log (:class:`audit.log.LogReader` provides it)."""

    @property
    def checkpoint_note(self) -> bytes:
        """The latest signed checkpoint note."""
        ...

    def iter_entries(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """``(index, bytes)`` of the entries from ``start``."""
        ...


@dataclass(frozen=True)
class ArchiveReport:
    """What :meth:`S3Archive.verify` checked."""

    entries: int
    """Entries archived and matching the log (the archive's contiguous prefix)."""
    bundles: int
    """Entry bundle objects checked."""
    checkpoints: int
    """Checkpoint objects checked (signature and root)."""


@dataclass(frozen=True)
class ArchiveFinding:
    """One thing :meth:`S3Archive.verify_archive` found wrong or worth knowing."""

    code: str
    """CamelCase kind: ``Gap``, ``RootMismatch``, ``BadCheckpoint``, ``BadBundle``,
    ``BundlesDisagree``, ``Overwritten``, ``Hidden``, ``NotLocked``, ``UnknownObject``,
    ``Empty`` (failures); ``UnsignedTail``, ``RetentionEnded``, ``Rewritten``,
    ``NoDefaultRetention`` (notes)."""
    message: str
    """What was found and what it means, for a person."""
    fatal: bool
    """Whether the archive fails verification because of it."""
    key: str = ""
    """The object concerned (relative to the prefix), if one."""


@dataclass(frozen=True)
class ArchiveVerification:
    """The result of checking an archive on its own (:meth:`S3Archive.verify_archive`)."""

    entries: int
    """Entries read from the archive in order, from 0, without a gap."""
    verified: int
    """Size of the largest checkpoint that verified (signature and recomputed root)."""
    checkpoints: int
    """Checkpoints that verified; all of them are prefixes of one sequence of entries."""
    objects: int
    """Objects (keys) in the archive."""
    latest: Checkpoint | None
    """The largest checkpoint that verified."""
    retention: tuple[str, int] | None
    """The bucket's default retention ``(mode, days)``, if it has one."""
    findings: tuple[ArchiveFinding, ...] = field(default=())
    """Failures and notes, in the order found."""

    @property
    def ok(self) -> bool:
        """Whether nothing fatal was found."""
        return not any(f.fatal for f in self.findings)


def bundle_key(prefix: str, bundle: int, width: int) -> str:
    """Object key of entry bundle ``bundle`` holding ``width`` entries."""
    name = f"{prefix}entries/{bundle:016d}"
    return name if width == BUNDLE_SIZE else f"{name}.p/{width}"


def checkpoint_key(prefix: str, size: int) -> str:
    """Object key of the checkpoint of ``size`` entries."""
    return f"{prefix}checkpoints/{size:020d}"


def bundle_bytes(entries: Iterable[bytes]) -> bytes:
    """A bundle's contents: each entry's exact bytes followed by ``\\n``."""
    return b"".join(e + b"\n" for e in entries)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _parse_note(data: bytes) -> Checkpoint:
    return Checkpoint.from_text(Note.parse(data).text)


class S3Archive:
    """A write-once archive of one log in an S3 bucket with Object Lock."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        retention_days: int | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if retention_days is not None and retention_days < 1:
            raise ValueError("retention must be at least one day")
        self.s3 = s3
        """The boto3 S3 client."""
        self.bucket = bucket
        """Bucket name."""
        self.prefix = prefix
        """Key prefix (empty or ending in ``/``)."""
        self.retention_days = retention_days
        """If set, every object is written with its own COMPLIANCE retention of this many
        days, whatever the bucket's default says."""

    def create_bucket(self, retention_days: int, *, region: str | None = None) -> None:
        """Create the bucket with Object Lock and COMPLIANCE default retention.

        An existing bucket of ours is accepted only if Object Lock is enabled on it; its
        default retention is then set to ``retention_days``.
        """
        if retention_days < 1:
            raise ValueError("retention must be at least one day")
        try:
            if region and region != "us-east-1":
                self.s3.create_bucket(
                    Bucket=self.bucket,
                    ObjectLockEnabledForBucket=True,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                self.s3.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise ArchiveError(f"cannot create bucket {self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise ArchiveError(f"cannot create bucket {self.bucket}: {exc}") from exc
        try:
            current = self.s3.get_object_lock_configuration(Bucket=self.bucket)
            enabled = current.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        except ClientError as exc:
            raise ArchiveError(
                f"bucket {self.bucket} has no Object Lock; archive to a new bucket: {exc}"
            ) from exc
        if enabled != "Enabled":
            raise ArchiveError(f"bucket {self.bucket} does not have Object Lock enabled")
        try:
            self.s3.put_object_lock_configuration(
                Bucket=self.bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": retention_days}},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveError(f"cannot set retention on {self.bucket}: {exc}") from exc

    def ensure_bucket(self, retention_days: int) -> None:
        """Create the bucket as :meth:`create_bucket` does if it is missing.

        An existing bucket is left as it is (its default retention is not changed), but
        it must have Object Lock enabled.
        """
        try:
            config = self.s3.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket" or _status(exc) == 404:
                self.create_bucket(retention_days, region=self.s3.meta.region_name)
                return
            raise ArchiveError(
                f"bucket {self.bucket} has no Object Lock (or it cannot be read); "
                f"archive to a bucket created with Object Lock: {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise ArchiveError(f"cannot reach bucket {self.bucket}: {exc}") from exc
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise ArchiveError(f"bucket {self.bucket} does not have Object Lock enabled")

    def retention(self) -> tuple[str, int]:
        """The bucket's default retention: ``(mode, days)``; raises if there is none."""
        try:
            config = self.s3.get_object_lock_configuration(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveError(f"cannot read Object Lock settings of {self.bucket}") from exc
        rule = config.get("ObjectLockConfiguration", {}).get("Rule", {})
        default = rule.get("DefaultRetention", {})
        if "Mode" not in default or "Days" not in default:
            raise ArchiveError(f"bucket {self.bucket} has no default retention in days")
        return str(default["Mode"]), int(default["Days"])

    def _get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404") or _status(exc) == 404:
                return None
            raise ArchiveError(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise ArchiveError(f"cannot read s3://{self.bucket}/{key}: {exc}") from exc

    def put_once(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` unless it exists; ``True`` if this call wrote it.

        Identical bytes already there are success (``False``); different bytes raise
        :class:`ArchiveConflictError`.
        """
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        for _ in range(_CONFLICT_RETRIES):
            try:
                if self.retention_days is None:
                    self.s3.put_object(
                        Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*", ContentMD5=md5
                    )
                else:
                    until = datetime.now(UTC) + timedelta(days=self.retention_days)
                    self.s3.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=data,
                        IfNoneMatch="*",
                        ContentMD5=md5,
                        ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=until,
                    )
            except ClientError as exc:
                code, status = _code(exc), _status(exc)
                if code == "ConditionalRequestConflict" or status == 409:
                    time.sleep(0.1)  # a concurrent write of the same key; look again
                    continue
                if code != "PreconditionFailed" and status != 412:
                    raise ArchiveError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc
            except BotoCoreError as exc:
                raise ArchiveError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc
            else:
                return True
            existing = self._get(key)
            if existing == data:
                return False
            if existing is not None:
                raise ArchiveConflictError(
                    f"s3://{self.bucket}/{key} already holds different bytes; "
                    "the archive or the log has been tampered with"
                )
        raise ArchiveError(f"s3://{self.bucket}/{key}: conditional write kept conflicting")

    def archive(self, log: ArchiveSource, from_size: int = 0) -> int:
        """Archive the log up to its latest checkpoint; return that checkpoint's size.

        ``from_size`` is the size archived before (bundles wholly below it are skipped);
        re-archiving anything is harmless.
        """
        note = log.checkpoint_note
        size = _parse_note(note).size
        first = min(from_size, size) // BUNDLE_SIZE
        batch: list[bytes] = []
        bundle = first
        if size > first * BUNDLE_SIZE:
            for index, data in log.iter_entries(first * BUNDLE_SIZE):
                if index >= size:
                    break
                batch.append(data)
                if len(batch) == BUNDLE_SIZE or index == size - 1:
                    self.put_once(bundle_key(self.prefix, bundle, len(batch)), bundle_bytes(batch))
                    bundle, batch = bundle + 1, []
        if batch or bundle * BUNDLE_SIZE < size:
            raise ArchiveError(f"the log has fewer entries than its checkpoint of {size}")
        self.put_once(checkpoint_key(self.prefix, size), note)
        return size

    def _keys(self) -> Iterator[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(self.prefix) :]
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveError(f"cannot list s3://{self.bucket}/{self.prefix}: {exc}") from exc

    def _next_checkpoint(self, after: int) -> int | None:
        """The smallest archived checkpoint size above ``after`` (one listing call)."""
        start = f"{self.prefix}checkpoints/"
        args = {"StartAfter": checkpoint_key(self.prefix, after)} if after >= 0 else {}
        try:
            page = self.s3.list_objects_v2(
                Bucket=self.bucket,
                Prefix=start,
                MaxKeys=1,
                **args,  # type: ignore[arg-type]
            )
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveError(f"cannot list s3://{self.bucket}/{start}: {exc}") from exc
        for item in page.get("Contents", []):
            if m := _CHECKPOINT_RE.fullmatch(item["Key"][len(self.prefix) :]):
                return int(m.group(1))
        return None

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        """The largest archived checkpoint ``(size, note)``, or ``None`` if there is none.

        Found by a binary search over sizes with one-key listings (keys are zero-padded,
        so listing order is size order): some 70 requests at most, whatever the number
        of checkpoints archived.
        """
        low = self._next_checkpoint(-1)
        if low is None:
            return None
        high = 10**20 - 1  # invariant: a checkpoint of size ``low`` exists, none > ``high``
        while low < high:
            mid = (low + high) // 2  # low <= mid < high: each probe narrows the range
            found = self._next_checkpoint(mid)
            if found is None:
                high = mid
            else:
                low = found
        note = self._get(checkpoint_key(self.prefix, low))
        if note is None:
            raise ArchiveError(f"archived checkpoint {low} disappeared while being read")
        return low, note

    def verify(self, log: ArchiveSource, verifiers: Iterable[Verifier]) -> ArchiveReport:
        """Check every archived object against the log, in one streaming pass.

        Each bundle must hold exactly the log's entries at its position; each checkpoint
        must be signed by one of ``verifiers`` and have the root the log's entries give at
        its size. Raises :class:`~audit.errors.VerificationError` naming the first bad
        index, or :class:`ArchiveError` for objects that do not belong.
        """
        trusted = tuple(verifiers)
        bundles: dict[int, list[int]] = {}
        checkpoints: list[int] = []
        for key in self._keys():
            if m := _BUNDLE_RE.fullmatch(key):
                width = int(m.group(2)) if m.group(2) else BUNDLE_SIZE
                if not 0 < width <= BUNDLE_SIZE:
                    raise ArchiveError(f"archived bundle {key} has an impossible width")
                bundles.setdefault(int(m.group(1)), []).append(width)
            elif m := _CHECKPOINT_RE.fullmatch(key):
                checkpoints.append(int(m.group(1)))
            else:
                raise ArchiveError(f"unexpected object {self.prefix}{key} in the archive")
        contiguous = 0
        while BUNDLE_SIZE in bundles.get(contiguous, []):
            contiguous += 1
        partial = max(bundles.get(contiguous, [0]))
        archived = contiguous * BUNDLE_SIZE + partial
        ends = [b * BUNDLE_SIZE + w for b, widths in bundles.items() for w in widths]
        need = max([archived, *ends, *checkpoints])
        checkpoints.sort()
        tree = CompactRange()
        entries: dict[int, bytes] = {}
        pending = list(checkpoints)
        count = 0

        def check_checkpoints() -> None:
            while pending and pending[0] == tree.size:
                size = pending.pop(0)
                data = self._get(checkpoint_key(self.prefix, size))
                if data is None:
                    raise ArchiveError(f"archived checkpoint {size} disappeared")
                cp = open_checkpoint(data, trusted)
                if cp.size != size:
                    raise VerificationError(f"archived checkpoint {size} says size {cp.size}")
                if cp.root != tree.root():
                    raise VerificationError(
                        f"archived checkpoint {size} does not match the log's root at that size"
                    )

        check_checkpoints()
        if need:
            for index, data in log.iter_entries(0):
                if index >= need:
                    break
                tree.append(leaf_hash(data))
                entries[index % BUNDLE_SIZE] = data
                end = index + 1
                bundle = index // BUNDLE_SIZE
                for width in bundles.get(bundle, []):
                    if end == bundle * BUNDLE_SIZE + width:
                        self._check_bundle(bundle, width, [entries[i] for i in range(width)])
                        count += 1
                check_checkpoints()
        if pending or tree.size < need:
            raise VerificationError(
                f"the archive holds entries or checkpoints up to size {need} but the log has "
                f"only {tree.size}: the log was truncated",
                index=tree.size,
            )
        return ArchiveReport(archived, count, len(checkpoints))

    def _check_bundle(self, bundle: int, width: int, want: list[bytes]) -> None:
        got = self._get(bundle_key(self.prefix, bundle, width))
        if got is None:
            raise ArchiveError(f"archived bundle {bundle} ({width}) disappeared")
        if got == bundle_bytes(want):
            return
        lines = got.split(b"\n")
        for offset, data in enumerate(want):
            if offset >= len(lines) or lines[offset] != data:
                raise VerificationError(
                    f"archived entry {bundle * BUNDLE_SIZE + offset} differs from the log",
                    index=bundle * BUNDLE_SIZE + offset,
                )
        raise VerificationError(
            f"archived bundle {bundle} has extra bytes", index=bundle * BUNDLE_SIZE + width
        )

    # -- checking the archive on its own ----------------------------------------------

    def _list_versions(self) -> tuple[dict[str, list[str]], set[str]]:
        """Every key's version ids, oldest first, and the keys hidden by a delete marker."""
        versions: dict[str, list[str]] = {}
        hidden: set[str] = set()
        paginator = self.s3.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Versions", []):
                    key = item["Key"][len(self.prefix) :]
                    versions.setdefault(key, []).append(item.get("VersionId") or "null")
                for marker in page.get("DeleteMarkers", []):
                    hidden.add(marker["Key"][len(self.prefix) :])
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveError(f"cannot list s3://{self.bucket}/{self.prefix}: {exc}") from exc
        for ids in versions.values():
            ids.reverse()  # S3 lists the versions of a key newest first
        return versions, hidden

    def _get_version(self, key: str, version: str) -> tuple[bytes, str, datetime | None]:
        """One object version's bytes, Object Lock mode and retain-until date."""
        name = f"{self.prefix}{key}"
        try:
            if version == "null":
                got = self.s3.get_object(Bucket=self.bucket, Key=name)
            else:
                got = self.s3.get_object(Bucket=self.bucket, Key=name, VersionId=version)
            data = got["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveError(f"cannot read s3://{self.bucket}/{name}: {exc}") from exc
        return data, str(got.get("ObjectLockMode", "")), got.get("ObjectLockRetainUntilDate")

    def verify_archive(
        self, verifiers: Iterable[Verifier], *, now: datetime | None = None
    ) -> ArchiveVerification:
        """Check the archive alone, without the log, reading each object version once.

        Rebuilds the tree from the bundles in order and checks each archived checkpoint's
        signature (by one of ``verifiers``) and root at its size, so every verified
        checkpoint is consistent with every other. Every version of every object must be
        under COMPLIANCE retention; an object with a later version of other bytes
        (``Overwritten``) or a delete marker (``Hidden``) fails, although the original
        version is the one checked. Gaps in the bundles, and checkpoints beyond the
        archived entries, fail. Raises :class:`ArchiveError` only when S3 cannot be read.
        """
        trusted = tuple(verifiers)
        when = now or datetime.now(UTC)
        findings: list[ArchiveFinding] = []

        def finding(code: str, message: str, key: str = "", *, fatal: bool = True) -> None:
            findings.append(ArchiveFinding(code, message, fatal, key))

        try:
            retention: tuple[str, int] | None = self.retention()
        except ArchiveError as exc:
            retention = None
            finding("NoDefaultRetention", str(exc), fatal=False)
        versions, hidden = self._list_versions()
        bundles: dict[int, dict[int, str]] = {}
        checkpoints: dict[int, str] = {}
        for key in sorted(versions):
            if m := _BUNDLE_RE.fullmatch(key):
                width = int(m.group(2)) if m.group(2) else BUNDLE_SIZE
                if 0 < width <= BUNDLE_SIZE and key == bundle_key("", int(m.group(1)), width):
                    bundles.setdefault(int(m.group(1)), {})[width] = key
                    continue
            elif m := _CHECKPOINT_RE.fullmatch(key):
                checkpoints[int(m.group(1))] = key
                continue
            finding("UnknownObject", f"{key} is not an archive object", key)
        for key in sorted(hidden):
            finding(
                "Hidden",
                f"{key} has a delete marker: someone tried to delete it "
                "(the locked original is still there and is what was checked)",
                key,
            )
        if not bundles and not checkpoints:
            finding("Empty", f"s3://{self.bucket}/{self.prefix} holds no archived log")

        def fetch(key: str) -> bytes:
            first = b""
            for n, version in enumerate(versions[key]):
                data, mode, until = self._get_version(key, version)
                if mode != "COMPLIANCE":
                    finding(
                        "NotLocked",
                        f"{key} (version {version}) is not under COMPLIANCE retention "
                        f"(mode {mode or 'none'}): it could be deleted",
                        key,
                    )
                elif until is None or until <= when:
                    finding(
                        "RetentionEnded",
                        f"{key} (version {version}) is no longer retained (until {until})",
                        key,
                        fatal=False,
                    )
                if n == 0:
                    first = data
                elif data != first:
                    finding(
                        "Overwritten",
                        f"{key} has a later version with other bytes (version {version}): "
                        "someone wrote over the archived object; readers of the latest "
                        "version get the altered bytes (the locked original was checked)",
                        key,
                    )
                else:
                    finding(
                        "Rewritten",
                        f"{key} was written again with identical bytes",
                        key,
                        fatal=False,
                    )
            return first

        tree = CompactRange()
        pending = deque(sorted(checkpoints))
        latest: Checkpoint | None = None
        verified_count = 0

        def settle() -> None:
            nonlocal latest, verified_count
            while pending and pending[0] == tree.size:
                size = pending.popleft()
                key = checkpoints[size]
                try:
                    cp = open_checkpoint(fetch(key), trusted)
                except (VerificationError, MalformedError) as exc:
                    finding("BadCheckpoint", f"checkpoint {size} does not verify: {exc}", key)
                    continue
                if cp.size != size:
                    finding("BadCheckpoint", f"checkpoint {key} says size {cp.size}", key)
                elif latest is not None and cp.origin != latest.origin:
                    finding(
                        "BadCheckpoint",
                        f"checkpoint {size} is for log {cp.origin!r}, not {latest.origin!r}",
                        key,
                    )
                elif cp.root != tree.root():
                    finding(
                        "RootMismatch",
                        f"checkpoint {size} does not match the root of the archived entries "
                        f"0-{size - 1}: an entry was altered, or the log forked",
                        key,
                    )
                else:
                    latest, verified_count = cp, verified_count + 1

        settle()
        last = max(bundles, default=-1)
        for bundle in range(last + 1):
            first_index = bundle * BUNDLE_SIZE
            widths = bundles.get(bundle)
            if not widths:
                finding("Gap", f"no bundle holds entries from {first_index} on")
                break
            widest = max(widths)
            contents = {width: fetch(key) for width, key in sorted(widths.items())}
            data = contents[widest]
            lines = data[:-1].split(b"\n") if data.endswith(b"\n") else []
            if len(lines) != widest:
                finding(
                    "BadBundle",
                    f"bundle {widths[widest]} does not hold {widest} entries, one per line",
                    widths[widest],
                )
                break
            for width, other in contents.items():
                if width != widest and other != bundle_bytes(lines[:width]):
                    finding(
                        "BundlesDisagree",
                        f"{widths[width]} differs from the first {width} entries of "
                        f"{widths[widest]}: the log forked or an object was altered",
                        widths[width],
                    )
            bad = False
            for offset, entry in enumerate(lines):
                if entry_index_hint(entry) != first_index + offset:
                    finding(
                        "BadBundle",
                        f"line {offset} of {widths[widest]} is not entry {first_index + offset}",
                        widths[widest],
                    )
                    bad = True
                    break
                tree.append(leaf_hash(entry))
                settle()
            if bad:
                break
            if widest < BUNDLE_SIZE and bundle < last:
                finding(
                    "Gap",
                    f"entries {first_index + widest}-{first_index + BUNDLE_SIZE - 1} are "
                    "not archived, but later bundles are",
                )
                break
        for size in pending:
            finding(
                "Gap",
                f"checkpoint {size} covers entries the archive does not hold "
                f"(it holds {tree.size} in order)",
                checkpoints[size],
            )
        verified = latest.size if latest else 0
        signed = max(checkpoints, default=0)
        if tree.size > signed:
            finding(
                "UnsignedTail",
                f"entries {signed}-{tree.size - 1} are archived but no archived checkpoint "
                "covers them yet (the archiver writes the checkpoint after the entries)",
                fatal=False,
            )
        return ArchiveVerification(
            entries=tree.size,
            verified=verified,
            checkpoints=verified_count,
            objects=len(versions),
            latest=latest,
            retention=retention,
            findings=tuple(findings),
        )
