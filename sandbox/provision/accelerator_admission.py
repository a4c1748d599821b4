"""A ValidatingAdmissionPolicy: a sandbox's pods ask only for accelerators its quota names.

A ResourceQuota limits an extended resource only when it names it (as
``requests.<name>``); Kubernetes has no wildcard, and the quota admission plugin lets a
pod asking for a resource the quota does not name in unlimited. The operator names
every accelerator the platform declares (``accelerator_resources``), 0 unless granted,
so the gap is an accelerator the nodes advertise but the platform forgot to declare —
a new MIG profile, another vendor's plugin. Kubernetes' own answer, the quota admission
plugin's ``limitedResources`` configuration, is an API server flag a chart cannot set and
applies to every namespace of the cluster. So the platform closes the gap itself:

- Pod CREATE in a namespace labelled ``regsandbox.io/sandbox``: every resource a
  container or init container requests or limits whose name has a ``/`` (every
  extended resource does; cpu, memory, ephemeral-storage and hugepages do not) must
  be named ``requests.<name>`` in that namespace's ResourceQuota ``sandbox``.

The quota is the policy's parameter (``paramKind`` ResourceQuota, looked up in the
pod's own namespace), so the policy needs no copy of the declared list; a sandbox
namespace without its quota admits no pod (``parameterNotFoundAction: Deny``). A
resource no node advertises could only leave a pod Pending; refusing it at admission
says so at once. Container resources cannot change after creation except cpu and
memory (in-place resize), so CREATE is enough.

The chart ships it in :data:`CHART_FILE`; regenerate that file with
``python -m sandbox.provision.accelerator_admission`` and a test fails when the two differ.
"""

from __future__ import annotations

import sys
from typing import Any

from kubernetes import client

from sandbox.kube.admission import apply_policies, binding, policy, write_chart_file
from sandbox.kube.admission import render as render_policies
from sandbox.provision.names import LABEL_SANDBOX

__all__ = [
    "ACCELERATOR_POLICY",
    "CHART_FILE",
    "QUOTA_NAME",
    "accelerator_policies",
    "apply_accelerator_policies",
    "main",
    "render",
]

ACCELERATOR_POLICY = "regsandbox-sandbox-accelerators"
"""Name of the policy (and of its binding)."""
CHART_FILE = "charts/regsandbox/templates/accelerator-admission-policies.yaml"
"""Where the chart keeps these manifests, relative to the repository root."""
QUOTA_NAME = "sandbox"
"""The sandbox ResourceQuota (see :func:`~sandbox.provision.sandbox_plan.isolation_objects`)."""

_NAMED = "(!k.contains('/') || ('requests.' + k) in params.spec.hard)"
_CONTAINER = (
    "!has(c.resources) || "
    f"((!has(c.resources.requests) || c.resources.requests.all(k, {_NAMED})) && "
    f"(!has(c.resources.limits) || c.resources.limits.all(k, {_NAMED})))"
)


def accelerator_policies() -> list[dict[str, Any]]:
    """The policy and its binding, in apply order."""
    rule = {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "operations": ["CREATE"],
        "resources": ["pods"],
    }
    pods = policy(
        ACCELERATOR_POLICY,
        rule,
        [
            {
                "expression": f"variables.containers.all(c, {_CONTAINER})",
                "message": (
                    "a pod in a sandbox may ask only for the accelerators (extended "
                    "resources) its ResourceQuota names; ask for one the platform offers "
                    "in the Sandbox's spec.resources.accelerators"
                ),
                "reason": "Forbidden",
            }
        ],
        namespace_selector={"matchExpressions": [{"key": LABEL_SANDBOX, "operator": "Exists"}]},
    )
    pods["spec"]["paramKind"] = {"apiVersion": "v1", "kind": "ResourceQuota"}
    pods["spec"]["variables"] = [
        {
            "name": "containers",
            "expression": (
                "object.spec.containers + "
                "(has(object.spec.initContainers) ? object.spec.initContainers : [])"
            ),
        }
    ]
    bound = binding(ACCELERATOR_POLICY)
    bound["spec"]["paramRef"] = {"name": QUOTA_NAME, "parameterNotFoundAction": "Deny"}
    return [pods, bound]


def render() -> str:
    """The manifests as the chart file: a header, then YAML documents."""
    return render_policies(
        accelerator_policies(),
        "sandbox.provision.accelerator_admission",
        "A sandbox's pods ask only for accelerators its quota names",
    )


def apply_accelerator_policies(api: client.ApiClient) -> None:
    """Create or replace the policy and its binding on a real API server."""
    apply_policies(api, accelerator_policies())


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.provision.accelerator_admission [FILE]`` writes the chart file."""
    write_chart_file(sys.argv[1:] if argv is None else argv, CHART_FILE, render)


if __name__ == "__main__":
    main()
