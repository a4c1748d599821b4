"""Conditional reads: If-Match, If-None-Match, If-(Un)Modified-Since and If-Range.

The conditions are parsed once per request (:meth:`Preconditions.from_headers`) and
evaluated against the ETag and Last-Modified of the very object version whose bytes the
gateway is about to send (the metadata of the store's GET answer, not of an earlier
HEAD), so an object overwritten between a client's HEAD and its GET can never be sent
under an ``If-Match`` naming the old version.

Evaluation follows RFC 9110 §13.2.2, which is also what S3 documents:

1. ``If-Match`` false: 412. When ``If-Match`` is present ``If-Unmodified-Since`` is
   ignored (S3: ``If-Match`` true and ``If-Unmodified-Since`` false is 200).
2. otherwise ``If-Unmodified-Since`` false: 412.
3. ``If-None-Match`` false: 304 (reads only). When it is present ``If-Modified-Since`` is
   ignored (S3: ``If-None-Match`` false and ``If-Modified-Since`` true is 304).
4. otherwise ``If-Modified-Since`` false: 304.
5. a GET's ``Range`` with ``If-Range`` false is ignored: the whole object is sent (200).

``If-Match`` compares strongly and ``If-None-Match`` weakly (RFC 9110 §8.8.3.2). An
unquoted tag is read as the quoted one, as S3 and MinIO do. A date that is not an
HTTP-date (or a list of dates) is ignored (RFC 9110 §13.1.3, §13.1.4).
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass

from sandbox.errors import SandboxError

__all__ = [
    "MAX_TAG_CHARS",
    "EntityTag",
    "NotModified",
    "PreconditionFailed",
    "Preconditions",
    "parse_entity_tags",
    "parse_http_date",
]


class _ConditionFalse(SandboxError):  # noqa: N818 - 304 and 412 are no errors of ours
    """A condition of the request is false for the object's current version."""

    def __init__(self, message: str, etag: str, last_modified: dt.datetime | None) -> None:
        super().__init__(message)
        self.etag = etag
        """The ETag of the version the condition was evaluated against."""
        self.last_modified = last_modified
        """Its Last-Modified."""


class PreconditionFailed(_ConditionFalse):
    """``If-Match`` or ``If-Unmodified-Since`` is false: 412, nothing is sent."""


class NotModified(_ConditionFalse):
    """``If-None-Match`` or ``If-Modified-Since`` is false for a read: 304, no body."""


@dataclass(frozen=True)
class EntityTag:
    """One entity-tag of a condition: its opaque part (without quotes) and weakness."""

    opaque: str
    weak: bool = False

    def strong_match(self, other: EntityTag) -> bool:
        """RFC 9110 strong comparison: neither is weak and the opaque tags are equal."""
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: EntityTag) -> bool:
        """RFC 9110 weak comparison: the opaque tags are equal."""
        return self.opaque == other.opaque

    def header(self) -> str:
        """The tag as it is written in a header."""
        return ('W/"' if self.weak else '"') + self.opaque + '"'


_NEVER = EntityTag("\x00malformed\x00", weak=True)
"""Stands for a list member that is no entity-tag: it matches no object's tag."""

MAX_TAG_CHARS = 256
"""Longest opaque tag read as one: no store's ETag comes near it (S3's are 32 hex digits,
and ``-N`` for a multipart object), so a longer one matches nothing. It is never sent to
the store either, whose header limit would refuse it as a bad request — which the
gateway would then report as the storage failing (502)."""


def parse_entity_tags(value: str) -> tuple[EntityTag, ...] | None:
    """The members of an ``If-Match`` / ``If-None-Match`` value; None for ``*``.

    Members are ``"x"``, ``W/"x"`` or (as S3 accepts) a bare ``x``; commas inside quotes
    belong to the tag. A member that is none of these matches nothing.
    """
    if value.strip() == "*":
        return None
    tags: list[EntityTag] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            break
        weak = value.startswith("W/", i)
        start = i + 2 if weak else i
        if start < n and value[start] == '"':
            end = value.find('"', start + 1)
            if end < 0:
                tags.append(_NEVER)
                break
            opaque = value[start + 1 : end]
            tags.append(EntityTag(opaque, weak) if len(opaque) <= MAX_TAG_CHARS else _NEVER)
            i = end + 1
            while i < n and value[i] in " \t":
                i += 1
            if i < n and value[i] != ",":  # junk after the closing quote
                tags[-1] = _NEVER
                i = _next_comma(value, i)
            continue
        end = _next_comma(value, i)
        bare = value[i:end].strip()
        ok = (
            bare
            and not weak
            and len(bare) <= MAX_TAG_CHARS
            and all(0x21 <= ord(c) <= 0x7E and c != '"' for c in bare)
        )
        tags.append(EntityTag(bare) if ok else _NEVER)
        i = end
    return tuple(tags)


def _next_comma(value: str, i: int) -> int:
    found = value.find(",", i)
    return len(value) if found < 0 else found


def _single(tags: tuple[EntityTag, ...] | None, *, strong: bool) -> str | None:
    """The one tag of ``tags`` as a strong tag for the store, or None if there is not
    exactly one usable tag (a weak tag never matches strongly, so it is not sent when
    ``strong``; for a weak comparison it is sent as its strong form)."""
    if tags is None or len(tags) != 1 or tags[0] is _NEVER or (strong and tags[0].weak):
        return None
    return EntityTag(tags[0].opaque).header()


def _object_tag(etag: str) -> EntityTag:
    """The stored object's ETag (S3 sends it quoted) as an :class:`EntityTag`."""
    parsed = parse_entity_tags(etag)
    if parsed and len(parsed) == 1 and parsed[0] is not _NEVER:
        return parsed[0]
    return EntityTag(etag.strip())


def parse_http_date(value: str | None) -> dt.datetime | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime) in UTC; None if it is not one."""
    if value is None or "," in value.split(" ", 1)[-1]:  # a list of dates is invalid
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def _seconds(when: dt.datetime) -> dt.datetime:
    """``when`` in UTC at the one-second resolution of HTTP dates."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Preconditions:
    """The conditions of one read, parsed; evaluate them with :meth:`check`."""

    if_match: tuple[EntityTag, ...] | None = None
    """``If-Match`` members; ``None`` with :attr:`match_any` for ``*``, else absent."""
    match_any: bool = False
    if_none_match: tuple[EntityTag, ...] | None = None
    """``If-None-Match`` members; ``None`` with :attr:`none_match_any` for ``*``."""
    none_match_any: bool = False
    if_modified_since: dt.datetime | None = None
    if_unmodified_since: dt.datetime | None = None
    if_range: str | None = None
    """``If-Range`` as sent (an entity-tag or an HTTP-date); see :meth:`range_applies`."""

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Preconditions | None:
        """The conditions in ``headers`` (case-insensitive mapping); None if there are none."""
        match = headers.get("if-match")
        none_match = headers.get("if-none-match")
        modified = parse_http_date(headers.get("if-modified-since"))
        unmodified = parse_http_date(headers.get("if-unmodified-since"))
        if_range = headers.get("if-range")
        if all(h is None for h in (match, none_match, modified, unmodified, if_range)):
            return None
        if_match = parse_entity_tags(match) if match is not None else None
        if_none_match = parse_entity_tags(none_match) if none_match is not None else None
        return cls(
            if_match=if_match,
            match_any=match is not None and if_match is None,
            if_none_match=if_none_match,
            none_match_any=none_match is not None and if_none_match is None,
            if_modified_since=None if none_match is not None else modified,
            if_unmodified_since=None if match is not None else unmodified,
            if_range=if_range,
        )

    @property
    def has_if_match(self) -> bool:
        """Whether the request carries ``If-Match``."""
        return self.match_any or self.if_match is not None

    @property
    def has_if_none_match(self) -> bool:
        """Whether the request carries ``If-None-Match``."""
        return self.none_match_any or self.if_none_match is not None

    def check(self, etag: str, last_modified: dt.datetime | None) -> None:
        """Raise if a condition is false for the version with ``etag`` / ``last_modified``.

        Raises:
            PreconditionFailed: ``If-Match`` or ``If-Unmodified-Since`` is false (412).
            NotModified: ``If-None-Match`` or ``If-Modified-Since`` is false (304).
        """
        tag = _object_tag(etag)
        changed = _seconds(last_modified) if last_modified is not None else None
        if self.if_match is not None and not any(t.strong_match(tag) for t in self.if_match):
            raise PreconditionFailed(
                "If-Match names no current version of the object", etag, last_modified
            )
        if (
            self.if_unmodified_since is not None
            and changed is not None
            and changed > self.if_unmodified_since
        ):
            raise PreconditionFailed(
                "the object was modified after If-Unmodified-Since", etag, last_modified
            )
        if self.none_match_any or (
            self.if_none_match is not None and any(t.weak_match(tag) for t in self.if_none_match)
        ):
            raise NotModified("If-None-Match names the object's version", etag, last_modified)
        if (
            self.if_modified_since is not None
            and changed is not None
            and changed <= self.if_modified_since
        ):
            raise NotModified(
                "the object was not modified since If-Modified-Since", etag, last_modified
            )

    def range_applies(self, etag: str, last_modified: dt.datetime | None) -> bool:
        """Whether a Range of a GET is served for this version (RFC 9110 §13.1.5).

        True without ``If-Range``. An entity-tag must match strongly (a weak one never
        does); a date must equal the Last-Modified exactly. Anything else is false: the
        whole current object is sent (200) rather than a part of another version.
        """
        if self.if_range is None:
            return True
        value = self.if_range.strip()
        if value.startswith(('"', "W/")):
            tags = parse_entity_tags(value)
            if tags is None or len(tags) != 1:
                return False
            return tags[0].strong_match(_object_tag(etag))
        when = parse_http_date(value)
        return when is not None and last_modified is not None and _seconds(last_modified) == when

    def upstream(self) -> dict[str, str]:
        """The one condition the store can evaluate itself, as boto3 parameters.

        ``If-Match`` of one strong tag (or ``*``) when present: the store then never
        starts sending another version. Otherwise ``If-None-Match`` of one tag (sent
        strong: the store's tags are strong, so its strong comparison is the weak one
        here), unless ``If-Unmodified-Since`` must be decided first. Lists (MinIO
        compares a list as one tag) and dates are left to the gateway, which evaluates
        them on the answer's ETag and Last-Modified. Only one condition is sent, so the
        store's order of evaluation (MinIO's differs from RFC 9110's) never decides.
        :meth:`check` is always run on the answer too.
        """
        if self.has_if_match:
            tag = "*" if self.match_any else _single(self.if_match, strong=True)
            return {"IfMatch": tag} if tag else {}  # MinIO takes no lists
        if self.if_unmodified_since is not None or not self.has_if_none_match:
            return {}
        tag = "*" if self.none_match_any else _single(self.if_none_match, strong=False)
        return {"IfNoneMatch": tag} if tag else {}
