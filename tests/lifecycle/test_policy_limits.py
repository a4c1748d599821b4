"""Input a tenant can write that no policy foresaw: refused by policy, never an error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get

from .helpers import condition, sandbox_body, unique

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("ttl", ["3000000d", "99999999999999999999w"])
def test_an_enormous_ttl_is_refused_with_a_violation(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    ttl: str,
) -> None:
    # The CRD's duration pattern bounds no number: millions of days pass admission, and
    # a datetime cannot hold the end. The reconcile must decide, not raise and retry.
    tenant = tenant_factory()
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, f"namespace {home}")
    name = unique("sbx")
    apply(admin_api, sandbox_body(name, tenant, lifetime={"ttl": ttl}))

    def denied() -> dict[str, Any] | None:
        obj = get(admin_api, "Sandbox", name, home)
        cond = condition(obj, "PolicyCompliant")
        return obj if cond and cond["status"] == "False" else None

    obj = operator.wait_until(denied, 60, "the policy denial")
    message = condition(obj, "PolicyCompliant")["message"]  # type: ignore[index]
    assert "SANDBOX_LIFETIME_TOO_LONG" in message
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    codes = [v["code"] for v in obj["status"]["policy"]["violations"]]
    assert codes == ["SANDBOX_LIFETIME_TOO_LONG"]
    assert get(admin_api, "Namespace", f"sbx-{tenant}-{name}") is None
    delete(admin_api, "Sandbox", name, home)
