"""Build a policy input from Tenant, Sandbox, Dataset and ModelExport manifests.

Used by ``sandboxctl policy check`` (and usable in a GitOps pipeline): the
manifests are the objects as written for ``kubectl apply``; the cluster facts come
from flags, since only the platform knows them. Field names follow the CRDs
(``apiVersion: regsandbox.io/v1alpha1``):

* Tenant ``metadata.name``, ``spec.sector``, ``spec.jurisdiction``, ``spec.members``,
  ``spec.attestations`` (see :mod:`sandbox.policy.model` for the fields policies read);
* Sandbox ``metadata.name``, ``spec.{purpose, region, lifetime.{ttl | expiresAt,
  onExpiry}, resources, datasets[].{name, purpose}, egress[].{cidr, ports, region,
  transfer}, publicInterest.{area, whyNotAnonymised, monitoring, deletion}}``;
* Dataset ``metadata.name``, ``spec.{location.{bucket, prefix, region, endpoint},
  sector, jurisdiction, identifiability, category (or the deprecated personalData),
  allowedPurposes, retention.{days}, transfer, ictThirdParty}``;
* ModelExport ``metadata.name``, ``spec.{sandbox, artifact.{path, kind, sha256},
  destination.{region, uri}, justification, requester, anonymity}``,
  ``status.approvals``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sandbox.api.dataset import DatasetSpec
from sandbox.api.export import ModelExportSpec
from sandbox.api.sandbox import SandboxSpec
from sandbox.api.tenant import TenantSpec
from sandbox.errors import ConfigurationError
from sandbox.policy.model import (
    ClusterFacts,
    DatasetFacts,
    ExportRequest,
    PolicyInput,
    SandboxClaim,
    TenantFacts,
)

__all__ = ["API_VERSION", "Manifests", "build_input", "load_manifests"]

API_VERSION = "regsandbox.io/v1alpha1"
"""The API group and version every manifest must carry."""

_KINDS = ("Tenant", "Sandbox", "Dataset", "ModelExport")


@dataclass
class Manifests:
    """The regsandbox objects read from one or more files, by kind."""

    tenants: list[dict[str, Any]] = field(default_factory=list)
    sandboxes: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)

    def add(self, document: Mapping[str, Any], origin: str) -> None:
        """Sort one document into its kind; other API groups are ignored.

        Raises:
            ConfigurationError: on a regsandbox document of an unknown kind or
                without ``metadata.name``.
        """
        if document.get("apiVersion") != API_VERSION:
            return
        kind = document.get("kind")
        if kind not in _KINDS:
            raise ConfigurationError(f"{origin}: unknown kind {kind!r} for {API_VERSION}")
        if not (document.get("metadata") or {}).get("name"):
            raise ConfigurationError(f"{origin}: {kind} has no metadata.name")
        target = {
            "Tenant": self.tenants,
            "Sandbox": self.sandboxes,
            "Dataset": self.datasets,
            "ModelExport": self.exports,
        }[str(kind)]
        target.append(dict(document))


def load_manifests(paths: Iterable[Path]) -> Manifests:
    """Read every YAML document (multi-document files accepted) from ``paths``.

    Raises:
        ConfigurationError: if a file cannot be read or parsed, naming file and line.
    """
    found = Manifests()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigurationError(f"{where}: invalid YAML: {exc}") from exc
        for index, document in enumerate(documents):
            if document is None:
                continue
            if not isinstance(document, dict):
                raise ConfigurationError(f"{path}: document {index + 1} is not a mapping")
            found.add(document, f"{path} (document {index + 1})")
    return found


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("spec") or {})


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def _one(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    if len(items) != 1:
        raise ConfigurationError(f"expected exactly one {kind} manifest, found {len(items)}")
    return items[0]


def _check_schema(obj: Mapping[str, Any], model: type[BaseModel]) -> None:
    """Refuse a manifest the CRD would refuse, naming the field (the policy models ignore
    unknown fields, so a misspelt one would otherwise read as absent)."""
    try:
        model.model_validate(_spec(obj))
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(
            f"{obj.get('kind')} {_name(obj)!r} is invalid: {problems}"
        ) from exc


def _export_claim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The policy view of a ModelExport.

    A manifest in the CRD's shape (``requestedBy``, ``artifact.type``, a destination
    bucket) is translated; the operator passes the policy shape directly, with the
    artifact digest and the destination's registered region it attested itself.
    """
    spec = _spec(obj)
    if "requestedBy" not in spec:
        return spec
    _check_schema(obj, ModelExportSpec)
    artifact = dict(spec.get("artifact") or {})
    destination = dict(spec.get("destination") or {})
    where = destination.get("key") or destination.get("prefix") or ""
    return {
        "sandbox": spec.get("sandbox", ""),
        "artifact": {"path": artifact.get("path", ""), "kind": artifact.get("type", "model")},
        "destination": {
            "region": destination.get("region", ""),
            "uri": f"s3://{destination.get('bucket', '')}/{where}",
        },
        "justification": spec.get("justification", ""),
        "requester": spec["requestedBy"],
        "anonymity": spec.get("anonymity"),
    }


def build_input(
    manifests: Manifests,
    cluster: ClusterFacts,
    *,
    action: str | None = None,
    now: datetime | None = None,
) -> PolicyInput:
    """The policy input for one decision over ``manifests``.

    ``action`` defaults to ``model.export`` when a ModelExport is present, else
    ``sandbox.provision``. Only datasets the sandbox asks for are passed on, as the
    operator would; asking for one that is not among the manifests is left for the
    policy to deny. ``now`` (default: the current time) resolves the lifetime and is
    the decision time the policies see (``input.now``).

    Raises:
        ConfigurationError: if the manifests do not make one valid input.
    """
    now = now or datetime.now(UTC)
    tenant = _one(manifests.tenants, "Tenant")
    sandbox = _one(manifests.sandboxes, "Sandbox")
    _check_schema(tenant, TenantSpec)
    _check_schema(sandbox, SandboxSpec)
    for dataset in manifests.datasets:
        _check_schema(dataset, DatasetSpec)
    if action is None:
        action = "model.export" if manifests.exports else "sandbox.provision"
    try:
        claim = SandboxClaim.model_validate({"name": _name(sandbox), **_spec(sandbox)})
        claim = claim.model_copy(update={"lifetime": claim.lifetime.resolved(now)})
        wanted = {request.name for request in claim.datasets}
        datasets = [
            DatasetFacts.model_validate({"name": _name(d), **_spec(d)})
            for d in manifests.datasets
            if _name(d) in wanted
        ]
        tenant_facts = TenantFacts.model_validate({"name": _name(tenant), **_spec(tenant)})
        export = None
        if action == "model.export":
            obj = _one(manifests.exports, "ModelExport")
            status = obj.get("status") or {}
            export = ExportRequest.model_validate(
                {"name": _name(obj), **_export_claim(obj), "approvals": status.get("approvals")}
            )
        return PolicyInput(
            action=action,
            now=now,
            cluster=cluster,
            tenant=tenant_facts,
            datasets=datasets,
            sandbox=claim,
            export=export,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"manifests do not form a valid policy input: {problems}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"manifests do not form a valid policy input: {exc}") from exc
