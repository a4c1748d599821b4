"""What the operator last handled of a Sandbox is recorded with its status, not beside it.

kopf's diff base (the object as last handled) once lived in an annotation, which costs a
write of the Sandbox of its own on every handling. It now goes in the status write the
handling makes anyway: a provisioning writes the Sandbox's metadata only to add the
finalizer. Objects an older operator handled still carry the annotation; it is read
until the status has the record, and removed when the record is first written there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import kopf
from kubernetes import client

from operators.persistence import (
    LEGACY_ANNOTATION,
    STATUS_FIELD,
    ProgressAnnotations,
    StatusDiffBase,
)
from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, get

from .helpers import ready_sandbox, sandbox_body


def _owned_by_updates(obj: dict[str, Any], subresource: str) -> list[dict[str, Any]]:
    """The field sets of the Update (not Apply) entries on ``subresource`` ('' = main)."""
    return [
        entry.get("fieldsV1") or {}
        for entry in obj["metadata"].get("managedFields") or []
        if entry.get("operation") == "Update" and entry.get("subresource", "") == subresource
    ]


def test_a_provisioning_writes_the_sandbox_metadata_only_for_its_finalizer(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
) -> None:
    tenant = tenant_factory()
    name, _ = ready_sandbox(admin_api, operator, tenant)
    obj = get(admin_api, "Sandbox", name, f"tenant-{tenant}")
    assert obj is not None

    assert LEGACY_ANNOTATION not in (obj["metadata"].get("annotations") or {})
    recorded = json.loads(obj["status"][STATUS_FIELD])
    assert recorded["spec"] == obj["spec"]

    main = _owned_by_updates(obj, "")
    assert main, "the operator's finalizer write is an Update of the Sandbox"
    for fields in main:
        # Only the finalizer: no annotation, so no write of the Sandbox of its own.
        assert set(fields) == {"f:metadata"}, fields
        assert set(fields["f:metadata"]) == {"f:finalizers"}, fields
    status = _owned_by_updates(obj, "status")
    assert any(f"f:{STATUS_FIELD}" in f.get("f:status", {}) for f in status)


def test_a_spec_change_is_handled_and_recorded_in_the_status(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
) -> None:
    tenant = tenant_factory()
    name, _ = ready_sandbox(admin_api, operator, tenant)
    home = f"tenant-{tenant}"
    apply(admin_api, sandbox_body(name, tenant, purpose="model validation, second run"))

    def recorded_again() -> dict[str, Any] | None:
        obj = get(admin_api, "Sandbox", name, home)
        raw = ((obj or {}).get("status") or {}).get(STATUS_FIELD)
        if raw and json.loads(raw)["spec"]["purpose"] == "model validation, second run":
            return obj
        return None

    obj = operator.wait_until(recorded_again, 60, "the new spec to be recorded")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert LEGACY_ANNOTATION not in (obj["metadata"].get("annotations") or {})


# -- the storage itself, on kopf's own types -------------------------------------------


def _body(
    status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None
) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": "s", "namespace": "tenant-t", "annotations": annotations or {}},
        "spec": {"purpose": "p"},
    }
    if status is not None:
        raw["status"] = status
    return kopf.Body(cast(kopf.RawBody, raw))


def test_the_status_record_is_read_before_the_legacy_annotation() -> None:
    storage = StatusDiffBase()
    body = _body(
        {STATUS_FIELD: json.dumps({"spec": {"purpose": "new"}})},
        {LEGACY_ANNOTATION: json.dumps({"spec": {"purpose": "old"}})},
    )
    assert storage.fetch(body=body) == {"spec": {"purpose": "new"}}


def test_an_object_an_older_operator_handled_is_not_taken_for_a_new_one() -> None:
    storage = StatusDiffBase()
    body = _body(annotations={LEGACY_ANNOTATION: json.dumps({"spec": {"purpose": "old"}})})
    assert storage.fetch(body=body) == {"spec": {"purpose": "old"}}
    assert storage.fetch(body=_body()) is None


def test_recording_goes_to_the_status_and_drops_the_legacy_annotation() -> None:
    storage = StatusDiffBase()
    legacy = _body(annotations={LEGACY_ANNOTATION: "{}"})
    patch = kopf.Patch()
    storage.store(body=legacy, patch=patch, essence={"spec": {"purpose": "p"}})
    assert json.loads(patch["status"][STATUS_FIELD]) == {"spec": {"purpose": "p"}}
    assert patch["metadata"]["annotations"] == {LEGACY_ANNOTATION: None}

    fresh = kopf.Patch()
    storage.store(body=_body(), patch=fresh, essence={"spec": {"purpose": "p"}})
    assert set(fresh) == {"status"}, "a new object's record is a status write only"


def test_recording_handler_progress_adds_no_marker_annotation() -> None:
    patch = kopf.Patch()
    ProgressAnnotations().store(
        key=kopf.HandlerId("sandbox_provision"),
        record={"started": "2026-12-06T18:00:00", "success": True},
        body=_body(),
        patch=patch,
    )
    assert set(patch["metadata"]["annotations"]) == {"regsandbox.io/sandbox_provision"}
