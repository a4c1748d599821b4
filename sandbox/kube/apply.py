"""Server-side apply and friends for the kinds regsandbox manages.

The REST paths come from a small table instead of API discovery: the operator touches
a fixed set of kinds, and a table is faster and fails loudly on anything unexpected.
Writes are server-side applies with field manager ``regsandbox`` and ``force``, so the
operator owns exactly the fields it sets and takes them back from hand edits; objects
expected to be new are created instead (:func:`create_or_apply`), with the same field
manager. Requests go straight to the client's connection pool (see :func:`_pool`).
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException, RESTResponse

__all__ = [
    "FIELD_MANAGER",
    "KINDS",
    "KindInfo",
    "api_message",
    "apply",
    "create",
    "create_or_apply",
    "delete",
    "get",
    "list_objects",
    "object_path",
    "replace",
    "replace_status",
]

FIELD_MANAGER = "regsandbox"
"""The server-side apply field manager of everything regsandbox writes."""


@dataclass(frozen=True)
class KindInfo:
    """Where a kind lives in the REST API."""

    group_version: str
    plural: str
    namespaced: bool

    @property
    def prefix(self) -> str:
        """``/api/v1`` for the core group, ``/apis/GROUP/VERSION`` otherwise."""
        return "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"


KINDS: dict[str, KindInfo] = {
    "Namespace": KindInfo("v1", "namespaces", False),
    "ServiceAccount": KindInfo("v1", "serviceaccounts", True),
    "Secret": KindInfo("v1", "secrets", True),
    "ConfigMap": KindInfo("v1", "configmaps", True),
    "ResourceQuota": KindInfo("v1", "resourcequotas", True),
    "LimitRange": KindInfo("v1", "limitranges", True),
    "PersistentVolumeClaim": KindInfo("v1", "persistentvolumeclaims", True),
    "Pod": KindInfo("v1", "pods", True),
    "Service": KindInfo("v1", "services", True),
    "Deployment": KindInfo("apps/v1", "deployments", True),
    "StatefulSet": KindInfo("apps/v1", "statefulsets", True),
    "NetworkPolicy": KindInfo("networking.k8s.io/v1", "networkpolicies", True),
    "Role": KindInfo("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": KindInfo("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": KindInfo("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": KindInfo("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "StorageClass": KindInfo("storage.k8s.io/v1", "storageclasses", False),
    "Tenant": KindInfo("regsandbox.io/v1alpha1", "tenants", False),
    "Sandbox": KindInfo("regsandbox.io/v1alpha1", "sandboxes", True),
    "Dataset": KindInfo("regsandbox.io/v1alpha1", "datasets", False),
    "SandboxPolicy": KindInfo("regsandbox.io/v1alpha1", "sandboxpolicies", False),
    "ModelExport": KindInfo("regsandbox.io/v1alpha1", "modelexports", True),
    "ExportReview": KindInfo("regsandbox.io/v1alpha1", "exportreviews", True),
}
"""The kinds regsandbox reads and writes."""


def object_path(kind: str, name: str | None = None, namespace: str | None = None) -> str:
    """REST path of a collection (``name=None``) or of one object."""
    try:
        info = KINDS[kind]
    except KeyError:
        raise ValueError(f"kind {kind!r} is not managed by regsandbox") from None
    path = info.prefix
    if info.namespaced:
        if not namespace:
            raise ValueError(f"{kind} {name!r} needs a namespace")
        path += f"/namespaces/{namespace}"
    path += f"/{info.plural}"
    return f"{path}/{name}" if name else path


_POOLS: weakref.WeakKeyDictionary[client.ApiClient, tuple[urllib3.HTTPConnectionPool, str]] = (
    weakref.WeakKeyDictionary()
)
_POOLS_LOCK = threading.Lock()


def _pool(api: client.ApiClient) -> tuple[urllib3.HTTPConnectionPool, str] | None:
    """The client's connection pool to its API server and the server's path prefix (empty
    unless the server sits behind a path), or None to go through ``call_api``.

    Requests are sent on this pool directly: the generated client's generic path
    (parameter sanitising, a pool lookup by URL per request, model deserialisation)
    costs about as much CPU as the HTTP exchange itself. Proxied clients keep it.
    """
    manager = api.rest_client.pool_manager
    if type(manager) is not urllib3.PoolManager:  # a ProxyManager routes differently
        return None
    with _POOLS_LOCK:
        known = _POOLS.get(api)
        if known is None or known[0].pool is None:  # never made, or closed
            host = api.configuration.host
            prefix = (urllib3.util.parse_url(host).path or "").rstrip("/")
            known = (manager.connection_from_url(host), prefix)
            _POOLS[api] = known
        return known


def _call(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """One JSON request; raises :class:`ApiException` for any status outside 2xx."""
    route = _pool(api)
    if route is None:
        result = api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=True,
        )
        return dict(result or {})
    headers = {**api.default_headers, "Content-Type": content_type, "Accept": "application/json"}
    if api.cookie:
        headers["Cookie"] = api.cookie
    params = list(query or [])
    api.update_params_for_auth(headers, params, ["BearerToken"])
    pool, prefix = route
    url = f"{prefix}{path}?{urlencode(params)}" if params else f"{prefix}{path}"
    payload = None if body is None else json.dumps(body).encode()
    try:
        response = pool.urlopen(method, url, body=payload, headers=headers)
    except urllib3.exceptions.SSLError as exc:  # as the generated client reports it
        raise ApiException(status=0, reason=f"{type(exc).__name__}\n{exc}") from exc
    if not 200 <= response.status <= 299:
        failed = RESTResponse(response)
        failed.data = failed.data.decode("utf8")
        raise ApiException(http_resp=failed)
    return dict(json.loads(response.data)) if response.data else {}


def apply(api: client.ApiClient, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    """Server-side apply ``obj`` as field manager ``regsandbox`` (force); returns the result."""
    meta = obj["metadata"]
    path = object_path(obj["kind"], meta["name"], meta.get("namespace"))
    query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
    if dry_run:
        query.append(("dryRun", "All"))
    return _call(
        api, "PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml"
    )


def get(
    api: client.ApiClient, kind: str, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        return _call(api, "GET", object_path(kind, name, namespace))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def delete(
    api: client.ApiClient,
    kind: str,
    name: str,
    namespace: str | None = None,
    *,
    propagation: str = "Foreground",
) -> bool:
    """Delete; True if it existed, False if it was already gone.

    ``Foreground`` (the default) keeps the object, marked for deletion, until its
    dependents are gone; ``Background`` removes it at once.
    """
    try:
        _call(
            api,
            "DELETE",
            object_path(kind, name, namespace),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def list_objects(
    api: client.ApiClient, kind: str, namespace: str | None = None, label_selector: str = ""
) -> list[dict[str, Any]]:
    """Every object of ``kind`` (in ``namespace``), optionally filtered by labels."""
    query = [("labelSelector", label_selector)] if label_selector else []
    result = _call(api, "GET", object_path(kind, None, namespace), query=query)
    return [dict(item) for item in result.get("items") or []]


def create(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Create ``obj`` (field manager ``regsandbox``); ApiException 409 if it exists."""
    collection = object_path(obj["kind"], None, obj["metadata"].get("namespace"))
    return _call(api, "POST", collection, body=obj, query=[("fieldManager", FIELD_MANAGER)])


def replace(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Replace ``obj`` wholesale (PUT); ApiException 404 if it does not exist."""
    meta = obj["metadata"]
    path = object_path(obj["kind"], meta["name"], meta.get("namespace"))
    return _call(api, "PUT", path, body=obj, query=[("fieldManager", FIELD_MANAGER)])


def replace_status(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Replace ``obj``'s status (PUT to its ``/status``), guarded by the
    ``metadata.resourceVersion`` it carries: ApiException 409 if the object changed
    since, 404 if it is gone."""
    meta = obj["metadata"]
    path = object_path(obj["kind"], meta["name"], meta.get("namespace")) + "/status"
    return _call(api, "PUT", path, body=obj, query=[("fieldManager", FIELD_MANAGER)])


def create_or_apply(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Create ``obj`` (cheaper for the API server than an apply); apply it if it exists.

    Used when the objects are expected to be new (first provisioning). Later server-side
    applies by the same field manager take the created fields over. Quota admission
    runs before the store finds a duplicate, so creating an existing object that a full
    ResourceQuota counts is refused as ``exceeded quota`` (403), not 409: such a refusal
    is also answered with an apply when the object exists.
    """
    try:
        return create(api, obj)
    except ApiException as exc:
        duplicate = exc.status == 409 or (
            exc.status == 403
            and "exceeded quota" in str(exc.body or "")
            and get(api, obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))
            is not None
        )
        if not duplicate:
            raise
    return apply(api, obj)


def api_message(exc: ApiException) -> str:
    """The API server's own message from an error response (its reason if it sent none)."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or f"HTTP {exc.status}")
