"""ValidatingAdmissionPolicies (CEL) that take export identities from the API server.

- ModelExport CREATE: ``spec.requestedBy`` must be the authenticated user.
- ExportReview CREATE: ``spec.reviewer`` must be the authenticated user, and every
  entry of ``spec.groups`` one of the user's groups.
- UPDATE of either: ``spec`` is immutable (the operator writes only ``status``, through
  the status subresource, which these policies do not match).

No one is exempt and no webhook server is involved. The chart ships the same objects
in ``charts/regsandbox/templates/admission-policies.yaml``; regenerate it with::

    python -m sandbox.artifacts.admission charts/regsandbox/templates/admission-policies.yaml

and a test fails when the two differ.
"""

from __future__ import annotations

import sys
from typing import Any

from kubernetes import client

from sandbox.api.meta import API_GROUP, API_VERSION
from sandbox.kube.admission import apply_policies, binding, policy, write_chart_file
from sandbox.kube.admission import render as render_policies

__all__ = [
    "CHART_FILE",
    "EXPORT_POLICY",
    "REVIEW_POLICY",
    "admission_policies",
    "apply_admission_policies",
    "main",
    "render",
]

EXPORT_POLICY = "regsandbox-modelexport-identity"
"""Name of the ModelExport policy (and of its binding)."""
REVIEW_POLICY = "regsandbox-exportreview-identity"
"""Name of the ExportReview policy (and of its binding)."""
CHART_FILE = "charts/regsandbox/templates/admission-policies.yaml"
"""Where the chart keeps these manifests, relative to the repository root."""

_IMMUTABLE = {
    "expression": "request.operation != 'UPDATE' || object.spec == oldObject.spec",
    "message": "spec is immutable after creation; create a new object instead",
    "reason": "Forbidden",
}


def _rule(plural: str) -> dict[str, Any]:
    return {
        "apiGroups": [API_GROUP],
        "apiVersions": [API_VERSION],
        "operations": ["CREATE", "UPDATE"],
        "resources": [plural],
    }


def admission_policies() -> list[dict[str, Any]]:
    """The two policies and their bindings, in apply order (policy before binding)."""
    export = policy(
        EXPORT_POLICY,
        _rule("modelexports"),
        [
            {
                "expression": (
                    "request.operation != 'CREATE' || "
                    "object.spec.requestedBy == request.userInfo.username"
                ),
                "messageExpression": (
                    "'spec.requestedBy must be the user creating the export (' + "
                    "request.userInfo.username + ')'"
                ),
                "reason": "Forbidden",
            },
            _IMMUTABLE,
        ],
    )
    review = policy(
        REVIEW_POLICY,
        _rule("exportreviews"),
        [
            {
                "expression": (
                    "request.operation != 'CREATE' || "
                    "object.spec.reviewer == request.userInfo.username"
                ),
                "messageExpression": (
                    "'spec.reviewer must be the user creating the review (' + "
                    "request.userInfo.username + ')'"
                ),
                "reason": "Forbidden",
            },
            {
                "expression": (
                    "request.operation != 'CREATE' || !has(object.spec.groups) || "
                    "object.spec.groups.all(g, g in request.userInfo.groups)"
                ),
                "message": "spec.groups may only name groups the reviewer belongs to",
                "reason": "Forbidden",
            },
            _IMMUTABLE,
        ],
    )
    return [export, binding(EXPORT_POLICY), review, binding(REVIEW_POLICY)]


def render() -> str:
    """The manifests as the chart file: a header, then YAML documents."""
    return render_policies(
        admission_policies(),
        "sandbox.artifacts.admission",
        "Export identities come from the API server",
    )


def apply_admission_policies(api: client.ApiClient) -> None:
    """Create or replace the policies and bindings on a real API server."""
    apply_policies(api, admission_policies())


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.artifacts.admission [FILE]`` writes the chart file."""
    write_chart_file(sys.argv[1:] if argv is None else argv, CHART_FILE, render)


if __name__ == "__main__":
    main()
