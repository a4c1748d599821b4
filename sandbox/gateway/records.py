"""The audit events the gateway writes: one shape for every request.

Each request gets a :class:`RequestRecord` as it is handled; :meth:`RequestRecord.event`
turns what is known so far into an :class:`~audit.entry.Event`:

- ``action``: ``dataset.read`` (GET and HEAD of an object), ``dataset.list``,
  ``model.artifact.written`` (a write into the sandbox's export outbox), or
  ``credentials.issued`` (S3 credentials given to a pod, :mod:`sandbox.gateway.sts`);
- ``actor``: the ServiceAccount and pod the API server vouched for (empty if none);
- ``resource``: kind ``Dataset`` and the dataset name, or kind ``ModelArtifact`` and the
  artifact path; the sandbox, its tenant and namespace;
- ``decision``: allow, or deny with the CamelCase reason as code (absent if no decision
  was reached, e.g. the API server was down);
- ``outcome``: ``success``, ``denied`` or ``failure``;
- ``request_id``: the request's id (:mod:`sandbox.gateway.requestids`), also in the
  answer's ``X-Request-Id``;
- ``details``: ``client_request_id`` (the client's own well-formed ``X-Request-Id``, if
  it sent one), ``phase`` (``refused``, ``head``, ``list``, ``read`` for a read logged in
  one record, ``started``/``completed`` for a streamed one), ``method``, ``status``,
  ``reason``, ``key``, ``range``, ``bytes`` sent, ``sha256`` of the bytes sent,
  ``whole_object``, ``object_size``, ``etag``.

A streamed read has two records with the same ``request_id``: ``started`` (written
before the first byte) and ``completed`` (written before the last chunk).

An outbox write is logged once its body has been received and *before* the object is
committed (``phase`` ``commit``, with ``bytes``, ``sha256``, ``bucket`` and ``object``,
the full S3 key), so no artifact is ever in an outbox without its record. If the commit
then fails, a second record with the same ``request_id`` (``phase`` ``refused``) says
why; refusals before the commit are one ``refused`` record, as for reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import JsonValue

from audit.entry import Actor, DecisionRecord, Event, Outcome, Resource
from sandbox.gateway.auth import Identity
from sandbox.gateway.authz import SandboxRef
from sandbox.gateway.requestids import client_request_id, request_id

__all__ = ["Action", "RequestRecord"]

Action = Literal["dataset.read", "dataset.list", "model.artifact.written", "credentials.issued"]

_MAX_TEXT = 1024


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


@dataclass
class RequestRecord:
    """What the gateway knows about one request, growing as it is handled."""

    action: Action
    """Audit action."""
    method: str
    """HTTP method."""
    name: str
    """Resource named in the path (as sent, clipped): the dataset, or the artifact path."""
    key: str | None = None
    """Object key or listing prefix relative to the dataset, or the artifact path
    relative to the outbox (as sent, clipped)."""
    byte_range: str | None = None
    """The Range header, if any (clipped)."""
    identity: Identity | None = None
    """Who, once authenticated."""
    sandbox: SandboxRef | None = None
    """Which sandbox, once known."""
    request_id: str = field(default_factory=request_id)
    """Correlates the audit records, the response header and the gateway's own logs."""
    kind: str = "Dataset"
    """Resource kind: ``Dataset``, or ``ModelArtifact`` for outbox writes."""

    def event(
        self,
        outcome: Outcome,
        phase: str,
        *,
        status: int,
        reason: str | None = None,
        allow: bool | None = None,
        **details: JsonValue,
    ) -> Event:
        """The audit event for this request at ``phase``."""
        actor = (
            Actor(
                service_account=self.identity.service_account_ref,
                pod=self.identity.pod_ref,
            )
            if self.identity
            else Actor()
        )
        ref = self.sandbox
        resource = Resource(
            kind=self.kind,
            name=_clip(self.name) or "-",
            namespace=ref.namespace if ref else None,
            tenant=ref.tenant if ref else None,
            sandbox=ref.sandbox if ref else None,
        )
        decision = None
        if allow is not None:
            decision = DecisionRecord(allow=allow, codes=(reason,) if reason and not allow else ())
        facts: dict[str, JsonValue] = {"phase": phase, "method": self.method, "status": status}
        client = client_request_id()
        if client is not None:
            facts["client_request_id"] = client
        if reason:
            facts["reason"] = reason
        if self.key is not None:
            facts["key"] = _clip(self.key)
        if self.byte_range is not None:
            facts["range"] = _clip(self.byte_range)
        facts.update(details)
        return Event(
            request_id=self.request_id,
            actor=actor,
            action=self.action,
            resource=resource,
            decision=decision,
            outcome=outcome,
            details=facts,
        )
