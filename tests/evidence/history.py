"""Realistic audit histories, written with the real audit library.

The actions and detail fields are the ones the operator (sandbox/lifecycle) and the
dataset gateway (sandbox/gateway) write: a tenant applied, a sandbox provisioned with its
grant and key, a workload reading through the gateway, a model export through the
airlock with two reviewers, expiry with the grant revoked and the key destroyed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.entry import Actor, DecisionRecord, Event, Resource
from audit.log import AuditLog
from audit.note import Signer
from audit.signing import write_vkey_file

OPERATOR = Actor(user="system:serviceaccount:regsandbox-system:regsandbox-operator")
POLICY = "sha256:" + "5e" * 32
ARTIFACT_SHA = "ab" * 32


@dataclass
class History:
    """Events of one or more tenants, in log order, with controllable timestamps."""

    start: dt.datetime = field(default_factory=lambda: dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC))
    events: list[Event] = field(default_factory=list)
    clock: int = 0

    def at(self) -> dt.datetime:
        self.clock += 1
        return self.start + dt.timedelta(minutes=self.clock)

    def add(self, **kwargs: Any) -> Event:
        event = Event(time=self.at(), **kwargs)
        self.events.append(event)
        return event

    def operator(
        self,
        action: str,
        tenant: str,
        sandbox: str,
        *,
        outcome: str = "success",
        decision: DecisionRecord | None = None,
        details: dict[str, Any] | None = None,
        kind: str = "Sandbox",
        name: str | None = None,
        actor: Actor = OPERATOR,
    ) -> Event:
        return self.add(
            actor=actor,
            action=action,
            resource=Resource(
                kind=kind,
                name=name or sandbox,
                namespace=f"tenant-{tenant}",
                tenant=tenant,
                sandbox=sandbox,
            ),
            outcome=outcome,
            decision=decision,
            details=details or {},
        )

    def provision(self, tenant: str, sandbox: str, dataset: str) -> str:
        """tenant.applied … sandbox.provisioned; returns the key id."""
        allow = DecisionRecord(allow=True, policy_digest=POLICY)
        self.add(
            actor=OPERATOR,
            action="tenant.applied",
            resource=Resource(kind="Tenant", name=tenant, tenant=tenant),
            outcome="success",
            details={
                "generation": 1,
                "members": [f"User:alice@{tenant}.example=member"],
                "sector": "finance",
            },
        )
        self.operator("sandbox.provisioning", tenant, sandbox, decision=allow)
        self.operator(
            "dataset.granted", tenant, sandbox, decision=allow, details={"dataset": dataset}
        )
        key_id = f"local:sbx-{tenant}-{sandbox}:{uuid.uuid4().hex[:12]}"
        self.operator(
            "sandbox.provisioned",
            tenant,
            sandbox,
            decision=allow,
            details={
                "namespace": f"sbx-{tenant}-{sandbox}",
                "keyId": key_id,
                "storageClass": f"regsandbox-sbx-{tenant}-{sandbox}",
            },
        )
        return key_id

    def read(
        self, tenant: str, sandbox: str, dataset: str, *, streamed: bool = True, size: int = 4096
    ) -> None:
        """A gateway read: started + completed (streamed) or one ``read`` entry (small)."""
        ns = f"sbx-{tenant}-{sandbox}"
        request = uuid.uuid4().hex
        common = {
            "request_id": request,
            "actor": Actor(service_account=f"{ns}/trainer", pod=f"{ns}/train-7d9f"),
            "action": "dataset.read",
            "resource": Resource(
                kind="Dataset", name=dataset, namespace=ns, tenant=tenant, sandbox=sandbox
            ),
            "decision": DecisionRecord(allow=True),
        }
        base = {"method": "GET", "status": 200, "key": "part-0001.parquet"}
        if streamed:
            self.add(
                outcome="success",
                details={
                    **base,
                    "phase": "started",
                    "object_size": size,
                    "length": size,
                    "etag": '"9b2cf5"',
                },
                **common,
            )
            self.add(
                outcome="success",
                details={
                    **base,
                    "phase": "completed",
                    "bytes": size,
                    "whole_object": True,
                    "object_size": size,
                    "sha256": "cd" * 32,
                },
                **common,
            )
        else:
            self.add(
                outcome="success",
                details={
                    **base,
                    "phase": "read",
                    "bytes": size,
                    "sha256": "ef" * 32,
                    "whole_object": True,
                    "object_size": size,
                    "etag": '"77aa"',
                },
                **common,
            )

    def export(
        self,
        tenant: str,
        sandbox: str,
        *,
        reviewers: tuple[str, ...] = ("bob", "carol"),
        required: int = 2,
        released_sha: str = ARTIFACT_SHA,
    ) -> None:
        """An export through the airlock: submitted, checked, reviewed, released."""
        name = f"{sandbox}-model-v1"
        requester = f"alice@{tenant}.example"
        allow = DecisionRecord(allow=True, policy_digest=POLICY)
        source = f"s3://regsandbox-outbox/{tenant}/{sandbox}/model.onnx"
        destination = f"s3://{tenant}-models/{name}/model.onnx"

        def op(action: str, **kw: Any) -> None:
            self.operator(action, tenant, sandbox, kind="ModelExport", name=name, **kw)

        op(
            "model.export.submitted",
            actor=Actor(user=requester, groups=(f"{tenant}:members",)),
            details={
                "artifact": "model.onnx",
                "type": "model",
                "destination": destination,
                "region": "eu-central-1",
                "justification": f"{sandbox} model for production",
            },
        )
        op(
            "model.export.policy-checked",
            decision=allow,
            details={
                "sha256": ARTIFACT_SHA,
                "size": 52_428_800,
                "source": source,
                "required_approvals": required,
            },
        )
        for reviewer in reviewers:
            op(
                "model.export.reviewed",
                actor=Actor(user=f"{reviewer}@{tenant}.example", groups=(f"{tenant}:reviewers",)),
                details={"review": f"{name}-{reviewer}", "decision": "approve", "comment": "ok"},
            )
        approvers = sorted(f"{r}@{tenant}.example" for r in reviewers)
        op(
            "model.export.approved",
            details={
                "approvers": approvers,
                "requester": requester,
                "required_approvals": required,
            },
        )
        details = {
            "sha256": released_sha,
            "size": 52_428_800,
            "source": source,
            "destination": destination,
            "region": "eu-central-1",
            "type": "model",
            "requester": requester,
            "approvers": approvers,
        }
        op("model.export.releasing", decision=allow, details=details)
        op("model.export.released", decision=allow, details={**details, "version": "v-0001"})

    def expire(self, tenant: str, sandbox: str, dataset: str, key_id: str | None) -> None:
        """The operator's expiry batch: revocation, key destruction, expiry."""
        self.operator(
            "dataset.revoked",
            tenant,
            sandbox,
            details={"dataset": dataset, "why": "sandbox.expired"},
        )
        if key_id is not None:
            self.operator(
                "key.destroyed",
                tenant,
                sandbox,
                details={"keyId": key_id, "provider": "local", "outcome": "destroyed"},
            )
        self.operator(
            "sandbox.expired", tenant, sandbox, details={"namespace": f"sbx-{tenant}-{sandbox}"}
        )


def compliant(history: History, tenant: str, sandbox: str, dataset: str, reads: int = 3) -> None:
    """A whole sandbox life that keeps every control."""
    key = history.provision(tenant, sandbox, dataset)
    for i in range(reads):
        history.read(tenant, sandbox, dataset, streamed=i % 2 == 0)
    history.export(tenant, sandbox)
    history.expire(tenant, sandbox, dataset, key)


@dataclass
class Written:
    """A log on disk and its key."""

    path: Path
    signer: Signer
    vkey: Path


def write_log(
    path: Path, events: list[Event], origin: str = "audit.regsandbox.test/log"
) -> Written:
    """Append ``events`` (in batches, like the services do) and publish a checkpoint."""
    signer = Signer.generate(origin)
    with AuditLog.create(path, origin, signer) as log:
        for batch in _batches(events, 7):
            log.append_batch(batch)
        log.publish_checkpoint()
    vkey = path.parent / f"{path.name}.vkey"
    write_vkey_file(vkey, signer.verifier)
    return Written(path, signer, vkey)


def _batches(events: list[Event], size: int) -> Iterator[list[Event]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]
