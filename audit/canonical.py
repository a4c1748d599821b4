"""RFC 8785 (JSON Canonicalization Scheme) serialisation.

:func:`canonical_json` is the one way this package turns a JSON value into bytes that
get hashed. The ``rfc8785`` package is the reference implementation and handles every
value; for the common case (string keys in plain ASCII, no floats, integers that fit in
an IEEE 754 double) the standard library's C JSON encoder produces exactly the same bytes
several times faster, so that case takes the fast path. A property test pins the two
paths to each other.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from audit.errors import MalformedError

__all__ = ["canonical_json"]

_INT_LIMIT = 2**53 - 1

_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def _fast_path_ok(value: Any) -> bool:
    """Whether the stdlib encoder gives RFC 8785 bytes for ``value``.

    Sorting keys by code point equals RFC 8785's UTF-16 order for ASCII keys; strings are
    escaped identically (short escapes for ``\\b\\f\\n\\r\\t``, lowercase ``\\u00xx`` for
    other controls, everything else raw UTF-8); only floats and out-of-range integers
    differ, and those go to ``rfc8785``.
    """
    t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return bool(-_INT_LIMIT <= value <= _INT_LIMIT)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not k.isascii() or not _fast_path_ok(v):
                return False
        return True
    if t is list or t is tuple:
        return all(_fast_path_ok(v) for v in value)
    return False


def canonical_json(value: Any) -> bytes:
    """Serialise a JSON value (dict, list, str, int, float, bool, None) per RFC 8785.

    Raises :class:`~audit.errors.MalformedError` for values JSON cannot represent
    canonically: NaN or infinite floats, integers beyond 2**53 - 1, non-string keys,
    lone surrogates.
    """
    try:
        if _fast_path_ok(value):
            return _encoder.encode(value).encode("utf-8")
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError, TypeError) as exc:
        raise MalformedError(f"value has no RFC 8785 canonical form: {exc}") from exc
