"""What the operator keeps in memory per Sandbox (real API server, kopf in this process).

kopf keeps each Sandbox's latest body for the life of its timer (the drift check). The
operator's ``on.event`` hook drops ``managedFields`` from that body: close to half of
it, read by no handler. This runs kopf with the same hook on the session's control
plane and looks at the body a timer gets.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._core.intents import registries as kopf_registries
from kubernetes import client

from sandbox.api.meta import API_GROUP, API_VERSION
from sandbox.devenv.controlplane import ControlPlane
from sandbox.kube.apply import apply, delete, get
from sandbox.testing import sandbox_manifest

from .helpers import RESOURCES, unique

pytestmark = pytest.mark.integration


def _operators_hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``on.event`` hook ``operators.handlers`` registers for Sandboxes."""
    monkeypatch.setenv("REGSANDBOX_CLUSTER_REGION", "onprem:lu-national-1")
    monkeypatch.setenv("REGSANDBOX_CLUSTER_JURISDICTION", "LU")
    from operators import runtime
    from operators.settings import OperatorSettings

    runtime.configure(OperatorSettings())
    import operators.handlers  # noqa: F401 - registers with kopf's default registry

    watching = kopf_registries.get_default_registry()._watching.get_all_handlers()
    (hook,) = [h.fn for h in watching if "sandboxes" in str(h.selector)]
    return hook


def _run_kopf(
    kubeconfig: str, hook: Any, seen: list[dict[str, Any]], stop: threading.Event
) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    if hook is not None:
        kopf.on.event(API_GROUP, API_VERSION, "sandboxes", registry=registry)(hook)

    @kopf.timer(API_GROUP, API_VERSION, "sandboxes", interval=0.5, registry=registry)
    def _timer(body: kopf.Body, **_: Any) -> None:
        seen.append(dict(body.metadata))

    async def main() -> None:
        flag: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def watch_stop() -> None:
            await asyncio.to_thread(stop.wait)
            flag.set_result(None)

        waiter = asyncio.create_task(watch_stop())
        settings = kopf.OperatorSettings()
        settings.persistence.finalizer = "test.regsandbox.io/memory"
        settings.posting.enabled = False
        await kopf.operator(
            registry=registry,
            settings=settings,
            clusterwide=True,
            standalone=True,
            stop_flag=flag,
        )
        await waiter

    os.environ["KUBECONFIG"] = kubeconfig
    asyncio.run(main())


@pytest.fixture
def sandbox(admin_api: client.ApiClient, crds: None) -> Iterator[dict[str, Any]]:
    ns = unique("memory")
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    body = sandbox_manifest(unique("kept"), "nobody", resources=RESOURCES)
    body["metadata"]["namespace"] = ns
    apply(admin_api, body)
    yield body
    name = body["metadata"]["name"]
    if get(admin_api, "Sandbox", name, ns) is not None:
        client.CustomObjectsApi(admin_api).patch_namespaced_custom_object(
            API_GROUP, API_VERSION, ns, "sandboxes", name, {"metadata": {"finalizers": []}}
        )
    delete(admin_api, "Namespace", ns, propagation="Background")


@pytest.mark.parametrize("lighten", [True, False])
def test_the_body_kept_for_a_sandbox_timer_has_no_managed_fields(
    admin_api: client.ApiClient,
    control_plane: ControlPlane,
    sandbox: dict[str, Any],
    lighten: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the hook (the control) kopf keeps the field managers' bookkeeping."""
    name = sandbox["metadata"]["name"]
    live = get(admin_api, "Sandbox", name, sandbox["metadata"]["namespace"])
    assert live is not None
    assert live["metadata"].get("managedFields")  # the API server sends them
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    runner = threading.Thread(
        target=_run_kopf,
        args=(
            str(control_plane.admin_kubeconfig),
            _operators_hook(monkeypatch) if lighten else None,
            seen,
            stop,
        ),
        daemon=True,
    )
    runner.start()
    try:
        for _ in range(600):  # up to 30 s
            if sum(m.get("name") == name for m in seen) >= 2 or not runner.is_alive():
                break
            stop.wait(0.05)
    finally:
        stop.set()
        runner.join(30)
    mine = [m for m in seen if m.get("name") == name]
    assert len(mine) >= 2, "the timer did not run"
    assert all(("managedFields" in m) is not lighten for m in mine)
