"""Outbox writes: a workload stores an artifact in its own sandbox's export outbox.

The write goes into the outbox of the sandbox the token belongs to, never one the
request names. Its body is streamed to S3 as it arrives (413 once it passes the limit,
nothing kept); it is logged with its size and SHA-256 once received and before it is
committed, so if the audit log refuses that record the answer is 503 and nothing was
stored. An existing artifact is never replaced (409). A long upload may outlive its
sandbox: the sandbox must still be able to act once the body has arrived. Whatever
was uploaded of a write that is not committed is dropped.
"""

from __future__ import annotations

from typing import Any

import anyio
import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from sandbox.gateway.auth import Identity
from sandbox.gateway.gateway import Gateway, to_thread
from sandbox.gateway.outbox import (
    ArtifactExists,
    ArtifactTooLarge,
    OutboxNotConfigured,
    OutboxWriter,
    Upload,
    validate_artifact_path,
)
from sandbox.gateway.records import RequestRecord
from sandbox.gateway.refusals import REFUSALS, response_headers
from sandbox.gateway.s3 import StorageUnavailable
from sandbox.gateway.wire import ArtifactWritten

__all__ = ["put_artifact"]

_log = structlog.get_logger("regsandbox.gateway")


async def put_artifact(
    gw: Gateway, request: Request, path: str, credentials: str | None
) -> Response:
    """Store the request body as artifact ``path`` of the token's sandbox."""
    record = RequestRecord("model.artifact.written", "PUT", path, key=path, kind="ModelArtifact")
    upload: Upload | None = None
    try:
        try:
            identity, outbox, key = await _admit(gw, record, request, credentials)
            with gw.write_slot():
                upload = outbox.start(key, _metadata(record, identity))
                return await _receive_and_commit(gw, record, request, upload)
        except ClientDisconnect:
            return await _disconnected(gw, record, upload)
        except REFUSALS as exc:
            return await gw.refuse(record, exc)
    finally:
        if upload is not None and not upload.committed:
            await _abort(record, upload)


async def _admit(
    gw: Gateway, record: RequestRecord, request: Request, credentials: str | None
) -> tuple[Identity, OutboxWriter, str]:
    """Authenticate, find the token's sandbox and its outbox key; refuse early what can be."""
    identity = await gw.authenticate(record, request.scope.get("raw_path") or b"", credentials)
    validate_artifact_path(record.name)
    outbox = gw.outbox
    if outbox is None:
        raise OutboxNotConfigured(
            "this gateway has no export outbox; ask the platform team to configure one"
        )
    ref = await gw.active_sandbox(record, identity)
    key = outbox.key(ref, record.name)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > outbox.max_bytes:
        raise ArtifactTooLarge(f"the artifact is larger than {outbox.max_bytes} bytes")
    if await to_thread(outbox.exists, key):
        raise ArtifactExists(
            f"{record.name} is already in the outbox and is never replaced; "
            "write the new artifact under another path"
        )
    return identity, outbox, key


def _metadata(record: RequestRecord, identity: Identity) -> dict[str, str]:
    """The S3 user metadata of the object: which request and which pod wrote it."""
    return {"regsandbox-request-id": record.request_id, "regsandbox-pod": identity.pod_ref or ""}


async def _receive_and_commit(
    gw: Gateway, record: RequestRecord, request: Request, upload: Upload
) -> Response:
    """Stream the body into ``upload``, check the sandbox again, log, then commit."""
    async for chunk in request.stream():
        if chunk and upload.feed(chunk):
            await to_thread(upload.flush)
    digest = await to_thread(upload.finish)
    assert record.identity is not None  # set by admission
    await gw.active_sandbox(record, record.identity)
    facts: dict[str, Any] = {
        "bytes": upload.size,
        "sha256": digest,
        "bucket": upload.bucket,
        "object": upload.key,
    }
    written = record.event("success", "commit", status=201, allow=True, **facts)
    if not await gw.append(record, written):
        return gw.unavailable(record, "nothing was stored")
    try:
        stored = await to_thread(upload.commit)
    except (ArtifactExists, StorageUnavailable) as exc:
        return await gw.refuse(record, exc, **facts)
    _log.info("artifact written", request_id=record.request_id, object=stored.key)
    assert record.sandbox is not None  # set by admission
    body = ArtifactWritten(
        path=record.name,
        sandbox=record.sandbox.sandbox,
        size=stored.size,
        sha256=stored.sha256,
        source=f"s3://{stored.bucket}/{stored.key}",
        request_id=record.request_id,
    )
    return JSONResponse(body.model_dump(by_alias=True), 201, headers=response_headers(record, 201))


async def _disconnected(gw: Gateway, record: RequestRecord, upload: Upload | None) -> Response:
    """Log a client that went away mid-body; the answer is never read."""
    size = upload.size if upload is not None else 0
    event = record.event("failure", "refused", status=400, reason="ClientDisconnected", bytes=size)
    await gw.append(record, event)
    return Response(status_code=400, headers=response_headers(record, 400))


async def _abort(record: RequestRecord, upload: Upload) -> None:
    """Drop what was uploaded of a write that was not committed (even if cancelled)."""
    with anyio.CancelScope(shield=True):
        if not await to_thread(upload.abort):
            _log.warning(
                "could not abort an unfinished upload (its parts stay invisible)",
                request_id=record.request_id,
            )
