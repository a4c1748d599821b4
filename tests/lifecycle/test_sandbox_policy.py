"""SandboxPolicies: custom Rego is validated, enforced on running sandboxes, and audited."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get, list_objects

from .helpers import condition, ready_sandbox, unique

pytestmark = pytest.mark.integration


def _rego(package: str, sandbox: str, code: str) -> str:
    return f"""package custom.{package}

violations contains v if {{
	input.sandbox.name == "{sandbox}"
	v := {{"code": "{code}", "msg": "this sandbox is paused by the platform",
		"regulation": "internal rule", "subject": "sandbox/{sandbox}"}}
}}
"""


@pytest.fixture
def policy_factory(admin_api: client.ApiClient) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(rego: str, enforcement: str = "deny") -> str:
        name = unique("pol")
        apply(
            admin_api,
            {
                "apiVersion": "regsandbox.io/v1alpha1",
                "kind": "SandboxPolicy",
                "metadata": {"name": name},
                "spec": {"rego": rego, "enforcement": enforcement},
            },
        )
        made.append(name)
        return name

    yield make
    for name in made:
        delete(admin_api, "SandboxPolicy", name)


def _accepted(api: client.ApiClient, name: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        cond = condition(get(api, "SandboxPolicy", name), "Accepted")
        return cond if cond and cond.get("observedGeneration") else None

    return check


def test_invalid_rego_is_refused_and_the_previous_set_stays(
    admin_api: client.ApiClient, operator: OperatorProcess, policy_factory: Callable[..., str]
) -> None:
    name = policy_factory("package custom.broken\n\nviolations contains v if {\n  v := \n}\n")
    cond = operator.wait_until(_accepted(admin_api, name), 30, "the policy to be checked")
    assert cond["status"] == "False"
    assert cond["reason"] == "InvalidPolicy"
    assert "previous policy set stays in force" in cond["message"]
    wrong_package = policy_factory("package sneaky\n\nallow := true\n")
    cond = operator.wait_until(_accepted(admin_api, wrong_package), 30, "the policy to be checked")
    assert cond["status"] == "False"
    assert "custom." in cond["message"]
    # Compiles in regopy (and would never match), refused by OPA's compiler.
    unbound = policy_factory(
        'package custom.unbound\n\nviolations contains {"code": "X"} if {\n'
        "\tinput.sandbox.resources.gpu > limit\n}\n"
    )
    cond = operator.wait_until(_accepted(admin_api, unbound), 30, "the policy to be checked")
    assert cond["status"] == "False"
    assert "var limit is unsafe" in cond["message"]


def test_deny_policy_quarantines_a_running_sandbox_until_removed(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    policy_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory()
    sandbox, ns = ready_sandbox(admin_api, operator, tenant)
    home = f"tenant-{tenant}"
    pol = policy_factory(_rego(unique("pause").replace("-", "_"), sandbox, "CUSTOM_PAUSED"))
    cond = operator.wait_until(_accepted(admin_api, pol), 30, "the policy to load")
    assert cond["status"] == "True", cond

    def quarantined() -> bool:
        compliant = condition(get(admin_api, "Sandbox", sandbox, home), "PolicyCompliant")
        names = {p["metadata"]["name"] for p in list_objects(admin_api, "NetworkPolicy", ns)}
        return bool(compliant and compliant["status"] == "False") and names == {"quarantine"}

    operator.wait_until(quarantined, 30, "the sandbox to be quarantined")
    obj = get(admin_api, "Sandbox", sandbox, home)
    assert "CUSTOM_PAUSED" in condition(obj, "PolicyCompliant")["message"]  # type: ignore[index]
    assert condition(obj, "Ready")["reason"] == "NonCompliant"  # type: ignore[index]
    # The log is read as of its latest checkpoint, published within a second.
    operator.wait_until(
        lambda: any(
            e["action"] == "sandbox.quarantined" and e["resource"].get("sandbox") == sandbox
            for e in audit_actions()
        ),
        10,
        "the quarantine audit entry",
    )
    assert "policy.changed" in [e["action"] for e in audit_actions()]

    delete(admin_api, "SandboxPolicy", pol)

    def restored() -> bool:
        ready = condition(get(admin_api, "Sandbox", sandbox, home), "Ready")
        names = {p["metadata"]["name"] for p in list_objects(admin_api, "NetworkPolicy", ns)}
        return bool(ready and ready["status"] == "True") and "quarantine" not in names

    operator.wait_until(restored, 30, "the sandbox to be compliant again")


def test_warn_policy_keeps_the_sandbox_ready_with_a_warning(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    policy_factory: Callable[..., str],
) -> None:
    tenant = tenant_factory()
    sandbox, _ = ready_sandbox(admin_api, operator, tenant)
    home = f"tenant-{tenant}"
    pol = policy_factory(
        _rego(unique("note").replace("-", "_"), sandbox, "CUSTOM_NOTE"), enforcement="warn"
    )
    operator.wait_until(_accepted(admin_api, pol), 30, "the policy to load")

    def warned() -> dict[str, Any] | None:
        cond = condition(get(admin_api, "Sandbox", sandbox, home), "PolicyCompliant")
        return cond if cond and cond["reason"] == "AllowedWithWarnings" else None

    cond = operator.wait_until(warned, 30, "the warning")
    assert cond["status"] == "True"
    assert "CUSTOM_NOTE" in cond["message"]
    ready = condition(get(admin_api, "Sandbox", sandbox, home), "Ready")
    assert ready is not None
    assert ready["status"] == "True"


def test_an_invalid_edit_keeps_the_last_accepted_version_in_force(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    policy_factory: Callable[..., str],
) -> None:
    tenant = tenant_factory()
    sandbox, ns = ready_sandbox(admin_api, operator, tenant)
    home = f"tenant-{tenant}"
    package = unique("hold").replace("-", "_")
    pol = policy_factory(_rego(package, sandbox, "CUSTOM_HOLD"))
    operator.wait_until(_accepted(admin_api, pol), 30, "the policy to load")

    def quarantined() -> bool:
        names = {p["metadata"]["name"] for p in list_objects(admin_api, "NetworkPolicy", ns)}
        return names == {"quarantine"}

    operator.wait_until(quarantined, 30, "the sandbox to be quarantined")

    # A broken edit is refused; the accepted version stays in force, named as such.
    obj = get(admin_api, "SandboxPolicy", pol)
    assert obj is not None
    assert obj["status"]["accepted"]["generation"] == obj["metadata"]["generation"]
    broken = f"package custom.{package}\n\nviolations contains v if {{\n  v := \n}}\n"
    apply(
        admin_api,
        {
            "apiVersion": obj["apiVersion"],
            "kind": "SandboxPolicy",
            "metadata": {"name": pol},
            "spec": {**obj["spec"], "rego": broken},
        },
    )

    def refused() -> dict[str, Any] | None:
        cond = condition(get(admin_api, "SandboxPolicy", pol), "Accepted")
        return cond if cond and cond["status"] == "False" else None

    cond = operator.wait_until(refused, 30, "the edit to be refused")
    assert "generation 1 of this policy, accepted earlier, stays in force" in cond["message"]

    # Another policy reloads the set (as a restart would): the held version is still in it.
    other = policy_factory(_rego(unique("other").replace("-", "_"), "nobody", "CUSTOM_NONE"))
    operator.wait_until(_accepted(admin_api, other), 30, "the other policy to load")
    digest = (get(admin_api, "SandboxPolicy", other) or {})["status"]["digest"]

    def decided_again() -> dict[str, Any] | None:
        obj = get(admin_api, "Sandbox", sandbox, home) or {}
        return obj if obj.get("status", {}).get("policy", {}).get("digest") == digest else None

    decided = operator.wait_until(decided_again, 30, "the sandbox to be decided again")
    assert "CUSTOM_HOLD" in condition(decided, "PolicyCompliant")["message"]  # type: ignore[index]
    assert quarantined()


def test_policies_created_at_once_are_all_in_force(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    policy_factory: Callable[..., str],
) -> None:
    """Every SandboxPolicy that says Accepted is in the policy set that decides.

    Created at once, the policies are reconciled in parallel; each load must include
    the others accepted meanwhile, or a policy says Accepted while it decides nothing.
    """
    tenant = tenant_factory()
    sandbox, _ = ready_sandbox(admin_api, operator, tenant)
    home = f"tenant-{tenant}"
    codes = [f"CUSTOM_AT_ONCE_{i}" for i in range(6)]
    regos = [_rego(unique("once").replace("-", "_"), sandbox, code) for code in codes]
    with ThreadPoolExecutor(len(regos)) as pool:
        names = list(pool.map(lambda rego: policy_factory(rego, "warn"), regos))
    for name in names:
        cond = operator.wait_until(_accepted(admin_api, name), 60, f"policy {name} to load")
        assert cond["status"] == "True", cond

    def all_warned() -> set[str] | None:
        obj = get(admin_api, "Sandbox", sandbox, home) or {}
        policy = (obj.get("status") or {}).get("policy") or {}
        seen = {w["code"] for w in policy.get("warnings") or []}
        return seen if seen >= set(codes) else None

    operator.wait_until(all_warned, 60, "every accepted policy to decide the sandbox")
