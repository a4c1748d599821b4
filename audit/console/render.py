"""How the console's pages are made: autoescaped templates, safe embedded JSON, headers.

Every value a page shows goes through Jinja2 with autoescaping on, so text from an
entry (a dataset name, a review comment, details a tenant's workload sent) is always
text, never markup. Data the page's script needs (a proof) is embedded as JSON in a
``<script type="application/json">`` element, with ``<``, ``>`` and ``&`` escaped so
it cannot close the element. Every response carries :data:`CONTENT_SECURITY_POLICY`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from fastapi.responses import Response
from jinja2 import Environment, PackageLoader, select_autoescape

__all__ = ["CONTENT_SECURITY_POLICY", "b64", "environment", "harden", "json_for_html"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
"""Every console response carries this: only the service's own files, no inline script."""


def harden(response: Response, *, cache: str = "no-store") -> Response:
    """``response`` with the console's security headers (CSP, no sniffing or framing)."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = cache
    return response


def b64(data: bytes) -> str:
    """Standard base64, as the JSON API writes hashes and entries."""
    return base64.b64encode(data).decode()


def json_for_html(value: object) -> str:
    """JSON safe inside a ``<script type="application/json">`` (no ``<``, ``>``, ``&``)."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _pretty(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _actor(doc: Mapping[str, Any]) -> str:
    actor = doc.get("actor") or {}
    return str(actor.get("user") or actor.get("service_account") or actor.get("pod") or "—")


def _resource(doc: Mapping[str, Any]) -> str:
    res = doc.get("resource") or {}
    where = f"{res['namespace']}/" if res.get("namespace") else ""
    return f"{res.get('kind', '?')} {where}{res.get('name', '?')}"


def environment() -> Environment:
    """The templates of :mod:`audit.console`, autoescaped, with the pages' filters."""
    env = Environment(
        loader=PackageLoader("audit.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["actor"] = _actor
    env.filters["resource"] = _resource
    env.filters["pretty"] = _pretty
    return env
