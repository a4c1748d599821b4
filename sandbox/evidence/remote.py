"""Collecting a pack's evidence from a running audit service (``--server URL``).

The tenant-scoped read API of the audit service (:mod:`audit.service`) serves a tenant's
entries, each with its RFC 6962 inclusion proof, and nothing of any other tenant: so a
compliance officer with a reader token for one tenant can make that tenant's pack
without a copy of the whole log.

Everything is tied to ONE checkpoint, the one fetched first: entries past it are left
out, and a page answered under a newer checkpoint has its proofs fetched again for the
first one's size. The batch receipt is built from the proofs and its root must be the
checkpoint's before anything is written; a service that serves a wrong entry or proof
is refused here, as a damaged log is by :func:`~sandbox.evidence.collect.collect`.
The checkpoint's signature is checked by ``verify`` against keys the supervisor trusts.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from audit.checkpoint import Checkpoint
from audit.errors import AuditError, MalformedError, VerificationError
from audit.merkle import leaf_hash
from audit.note import Note
from sandbox.evidence import receipts
from sandbox.evidence._gc import cycle_collection_paused
from sandbox.evidence.collect import Collected, Scope

__all__ = ["PAGE", "ServerError", "collect_from_server"]

PAGE = 1000
"""Entries asked for per request (the service's largest page)."""


class ServerError(AuditError):
    """The audit service could not be read, or refused the request."""


def _get(http: httpx.Client, path: str, params: dict[str, int] | None = None) -> httpx.Response:
    try:
        response = http.get(path, params=params)
    except httpx.HTTPError as exc:
        raise ServerError(f"audit service unreachable: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        detail = response.text.strip().splitlines()[:1]
        raise ServerError(
            f"audit service answered {response.status_code} to GET {path}"
            + (f": {detail[0][:200]}" if detail else "")
        )
    return response


def _hashes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise MalformedError(f"{what}: no list of hashes")
    try:
        return [base64.b64decode(v, validate=True) for v in values]
    except (binascii.Error, TypeError, ValueError) as exc:
        raise MalformedError(f"{what}: bad base64") from exc


def _take(
    http: httpx.Client,
    tenant: str,
    item: dict[str, Any],
    found: Collected,
    proofs: dict[int, list[bytes]],
    *,
    fresh: bool,
) -> None:
    """Add one served entry to ``found`` if the scope covers it, with its proof for the
    checkpoint's size (fetched again unless ``fresh``: served under that checkpoint)."""
    index = int(item["index"])
    data = base64.b64decode(item["entry"], validate=True)
    doc = json.loads(data)
    if not found.scope.covers(doc):
        return
    if b"\n" in data or doc.get("index") != index:
        raise MalformedError(f"entry {index} as served is not the logged entry")
    proof = _hashes(item.get("inclusion"), f"proof of entry {index}")
    if not fresh:
        again = _get(
            http,
            f"/v1/tenants/{tenant}/proof/inclusion",
            {"index": index, "size": found.size},
        ).json()
        proof = _hashes(again.get("hashes"), f"proof of entry {index}")
    found.entries.append((index, data))
    found.docs.append(doc)
    proofs[index] = proof


@cycle_collection_paused()
def collect_from_server(
    url: str,
    scope: Scope,
    *,
    token: str | None = None,
    cluster: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 30.0,
) -> Collected:
    """Read the scope's entries and their proofs from the audit service at ``url``.

    ``token`` is a bearer token allowed to read the tenant (none: the service's reads are
    open). ``cluster`` is as for :func:`~sandbox.evidence.collect.collect`. Raises
    :class:`ServerError` when the service cannot be read and
    :class:`~audit.errors.VerificationError` / :class:`~audit.errors.MalformedError`
    when what it serves does not add up to its checkpoint.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tenant = quote(scope.tenant, safe="")
    with httpx.Client(
        base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
    ) as http:
        note = _get(http, f"/v1/tenants/{tenant}/checkpoint").content
        try:
            checkpoint = Checkpoint.from_text(Note.parse(note).text)
        except MalformedError as exc:
            raise MalformedError(f"the service's checkpoint: {exc}") from exc
        found = Collected(scope, checkpoint.origin, note, checkpoint.size)
        proofs: dict[int, list[bytes]] = {}
        start: int | None = 0
        while start is not None and start < checkpoint.size:
            params = {"start": start, "limit": PAGE}
            page = _get(http, f"/v1/tenants/{tenant}/entries", params).json()
            start = page.get("next")
            for item in page.get("entries") or []:
                if int(item["index"]) >= checkpoint.size:
                    start = None
                    break
                fresh = page.get("size") == checkpoint.size
                _take(http, tenant, item, found, proofs, fresh=fresh)
    leaves = {index: leaf_hash(data) for index, data in found.entries}
    if found.entries:
        found.receipt = receipts.from_proofs(checkpoint.size, leaves, proofs, note)
        if receipts.BatchReceipt.parse(found.receipt).root(checkpoint.size) != checkpoint.root:
            raise VerificationError(
                f"the entries and proofs the service served do not lead to its checkpoint "
                f"(size {checkpoint.size})"
            )
    namespaces = _namespaces(found.entries)
    if cluster is not None and namespaces:
        found.cluster = cluster(namespaces)
    return found


def _namespaces(entries: list[tuple[int, bytes]]) -> list[str]:
    """The sandbox namespaces the entries record as provisioned, in log order."""
    namespaces: list[str] = []
    for _, data in entries:
        doc = json.loads(data)
        if doc.get("action") == "sandbox.provisioned":
            namespace = str((doc.get("details") or {}).get("namespace") or "")
            if namespace and namespace not in namespaces:
                namespaces.append(namespace)
    return namespaces
