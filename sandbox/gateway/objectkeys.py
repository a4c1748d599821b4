"""Object keys: what a client may ask for, and how it maps into a dataset's prefix.

A client names an object *relative to the dataset*; the gateway prepends the dataset's
S3 prefix. Anything that could name an object outside that prefix, or that a proxy or
object store might interpret differently from us, is refused with :class:`InvalidKey`
before storage is ever called:

- empty keys, keys longer than :data:`MAX_KEY_BYTES` (UTF-8), absolute keys (``/x``);
- ``.`` and ``..`` segments and empty segments (``a//b``);
- backslashes, NUL and other control characters;
- percent-escapes that survive decoding (``%2F`` sent as ``%252F``), and, in the raw
  request path, encoded slashes, backslashes, dots or NULs (``%2F``, ``%5C``, ``%2E``,
  ``%00``), which a router decodes into something else than the client saw.
"""

from __future__ import annotations

import re

from sandbox.errors import SandboxError

__all__ = [
    "MAX_KEY_BYTES",
    "InvalidKey",
    "check_raw_path",
    "dataset_prefix",
    "storage_key",
    "validate_key",
    "validate_listing_prefix",
]

MAX_KEY_BYTES = 1024
"""Longest object key S3 accepts, in bytes; the relative key must fit with the prefix."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_RAW_FORBIDDEN = re.compile(rb"%(2[fFeE]|5[cC]|00)")


class InvalidKey(SandboxError):  # noqa: N818 - reads as what it is: the key is invalid
    """An object key (or listing prefix) a client may not use; answered with 400."""


def check_raw_path(raw_path: bytes) -> None:
    """Refuse a request path carrying encoded slashes, backslashes, dots or NULs."""
    if _RAW_FORBIDDEN.search(raw_path):
        raise InvalidKey("encoded '/', '\\', '.' or NUL in the request path")


def _check_text(text: str, what: str) -> None:
    if "\\" in text:
        raise InvalidKey(f"{what} contains a backslash")
    if _CONTROL.search(text):
        raise InvalidKey(f"{what} contains NUL or a control character")
    if _ESCAPE.search(text):
        raise InvalidKey(f"{what} contains a percent-escape (double encoding)")
    if text.startswith("/"):
        raise InvalidKey(f"{what} is absolute; name objects relative to the dataset")


def _check_segments(segments: list[str], what: str) -> None:
    for segment in segments:
        if segment in (".", ".."):
            raise InvalidKey(f"{what} has a '{segment}' segment")
        if not segment:
            raise InvalidKey(f"{what} has an empty segment")


def validate_key(key: str) -> str:
    """Return ``key`` if it safely names an object inside a dataset; else raise InvalidKey."""
    if not key:
        raise InvalidKey("empty object key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key longer than {MAX_KEY_BYTES} bytes")
    _check_text(key, "object key")
    _check_segments(key.split("/"), "object key")
    return key


def validate_listing_prefix(prefix: str) -> str:
    """Like :func:`validate_key`, for a listing filter: empty or ending in ``/`` is fine."""
    if not prefix:
        return ""
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"prefix longer than {MAX_KEY_BYTES} bytes")
    _check_text(prefix, "prefix")
    segments = prefix.split("/")
    if segments[-1] == "":
        segments.pop()
    _check_segments(segments, "prefix")
    return prefix


def dataset_prefix(prefix: str) -> str:
    """The dataset's S3 prefix as a directory: ``""`` or ending in exactly one ``/``."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def storage_key(prefix: str, key: str) -> str:
    """The S3 key of dataset-relative ``key`` under dataset ``prefix`` (key validated)."""
    base = dataset_prefix(prefix)
    full = base + validate_key(key)
    if not full.startswith(base) or len(full.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey("object key does not fit inside the dataset prefix")
    return full
