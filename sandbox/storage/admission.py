"""A ValidatingAdmissionPolicy that keeps every claim in a sandbox on its encrypted class.

A sandbox's storage is encrypted because its one claim, ``workspace``, uses the
sandbox's own StorageClass (``regsandbox-<namespace>``, see
:func:`~sandbox.storage.profiles.storage_class_name`). Members cannot create claims
themselves, but controllers can on their behalf: a StatefulSet's volume claim
templates and a pod's generic ephemeral volumes name any class they like, and a claim
with no class takes the cluster's default, which may be unencrypted. The sandbox's
ResourceQuota admits a single claim; this policy does not rely on that count:

- PersistentVolumeClaim CREATE in a namespace labelled ``regsandbox.io/sandbox``:
  ``spec.storageClassName`` must be ``regsandbox-`` followed by the namespace's name.

The API server evaluates it (CEL), it fails closed and no one is exempt, the operator
included. The chart ships it in ``charts/regsandbox/templates/storage-admission-policies.yaml``;
regenerate that file with ``python -m sandbox.storage.admission`` and a test fails
when the two differ.
"""

from __future__ import annotations

import sys
from typing import Any

from kubernetes import client

from sandbox.kube.admission import apply_policies, binding, policy, write_chart_file
from sandbox.kube.admission import render as render_policies
from sandbox.provision.names import LABEL_SANDBOX

__all__ = [
    "CHART_FILE",
    "CLAIM_POLICY",
    "apply_claim_policies",
    "claim_policies",
    "main",
    "render",
]

CLAIM_POLICY = "regsandbox-sandbox-claims"
"""Name of the claim policy (and of its binding)."""
CHART_FILE = "charts/regsandbox/templates/storage-admission-policies.yaml"
"""Where the chart keeps these manifests, relative to the repository root."""


def claim_policies() -> list[dict[str, Any]]:
    """The claim policy and its binding, in apply order."""
    rule = {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["CREATE"],
        "resources": ["persistentvolumeclaims"],
    }
    claims = policy(
        CLAIM_POLICY,
        rule,
        [
            {
                "expression": (
                    "has(object.spec.storageClassName) && "
                    "object.spec.storageClassName == 'regsandbox-' + namespaceObject.metadata.name"
                ),
                "messageExpression": (
                    "'a claim in sandbox namespace ' + namespaceObject.metadata.name + "
                    "' must name its encrypted StorageClass regsandbox-' + "
                    "namespaceObject.metadata.name"
                ),
                "reason": "Forbidden",
            }
        ],
        namespace_selector={"matchExpressions": [{"key": LABEL_SANDBOX, "operator": "Exists"}]},
    )
    return [claims, binding(CLAIM_POLICY)]


def render() -> str:
    """The manifests as the chart file: a header, then YAML documents."""
    return render_policies(
        claim_policies(),
        "sandbox.storage.admission",
        "Claims in a sandbox use its encrypted StorageClass",
    )


def apply_claim_policies(api: client.ApiClient) -> None:
    """Create or replace the policy and its binding on a real API server."""
    apply_policies(api, claim_policies())


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.storage.admission [FILE]`` writes the chart file."""
    write_chart_file(sys.argv[1:] if argv is None else argv, CHART_FILE, render)


if __name__ == "__main__":
    main()
