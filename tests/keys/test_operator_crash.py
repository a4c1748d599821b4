"""The real operator, killed with SIGKILL between "key created" and "status written".

Issue #17: ``kill -9`` of the operator at that moment must leave exactly one key per
sandbox with every provider, and a destroyed key must not be readable back through the
API server by the operator's identity or a tenant's. The operator runs as a process
under the chart's RBAC against the session control plane, with ``local`` (wrapped keys
in Secrets) and ``pkcs11`` (a SoftHSM2 token); the kill point is the operator's crash-test
switch ``REGSANDBOX_TEST_HALT_BEFORE=Namespace:<marker>``: a first provisioning stops for
good right after ``keys.create`` returned and before any object or status is written.

``aws-kms`` is not run here: moto serves only AWS region names, while the test
cluster's region is ``onprem:lu-national-1`` and policy ties each sandbox's region (and
so its key's) to the cluster's. Its create-after-restart idempotence is covered against
moto in test_kms.py (the alias finds the key made before); the one window it leaves
open (a crash between CreateKey and CreateAlias) is in docs/key-custody.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.keys.pkcs11 import kek_label
from sandbox.keys.secret_store import KEK_SECRET
from sandbox.kube.apply import apply, delete, get, list_objects
from tests.keys.conftest import TOKEN_LABEL, USER_PIN, SoftHsm
from tests.lifecycle.helpers import SYSTEM_NS, condition, sandbox_body, unique

pytestmark = pytest.mark.integration

WRAPPED = "regsandbox.io/key=wrapped-data-key"


def _provider_env(provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if provider == "local":
        return {"REGSANDBOX_KEY_PROVIDER": "local"}
    softhsm: SoftHsm = request.getfixturevalue("softhsm")
    pin = tmp_path / "pin"
    pin.write_text(USER_PIN + "\n")
    return {
        "REGSANDBOX_KEY_PROVIDER": "pkcs11",
        "REGSANDBOX_PKCS11_MODULE": str(softhsm.module),
        "REGSANDBOX_PKCS11_TOKEN_LABEL": TOKEN_LABEL,
        "REGSANDBOX_PKCS11_PIN_FILE": str(pin),
    }


def _wrapped(api: client.ApiClient, sid: str) -> list[dict[str, Any]]:
    return [
        s
        for s in list_objects(api, "Secret", SYSTEM_NS, WRAPPED)
        if s["metadata"]["annotations"]["regsandbox.io/sandbox-id"] == sid
    ]


def _token_keys(softhsm: SoftHsm, sid: str) -> list[str]:
    """The sandbox's keys on the token, asked of the token itself (not the operator)."""
    token = pkcs11.lib(str(softhsm.module)).get_token(token_label=TOKEN_LABEL)
    try:
        session = token.open(rw=True, user_pin=USER_PIN)
    except p11.UserAlreadyLoggedIn:  # login belongs to the process: an earlier test did
        session = token.open(rw=True)
    with session:
        found = session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: kek_label(sid)}
        )
        return sorted(f"pkcs11-{bytes(obj[Attribute.ID]).hex()}" for obj in found)


def _keys_in_provider(
    provider: str, api: client.ApiClient, sid: str, request: pytest.FixtureRequest
) -> list[str]:
    """Every key the provider holds for ``sid``: wrapped Secrets, and token objects."""
    ids = [json.loads(base64.b64decode(s["data"]["value"]))["keyId"] for s in _wrapped(api, sid)]
    if provider == "pkcs11":
        token = _token_keys(request.getfixturevalue("softhsm"), sid)
        assert token == ids, f"token holds {token}, wrapped keys name {ids}"
    return ids


def _readable(api: client.ApiClient, name: str, namespace: str) -> dict[str, Any] | None:
    """The Secret as ``api``'s identity can read it: None when absent or forbidden."""
    try:
        return get(api, "Secret", name, namespace)
    except ApiException as exc:
        if exc.status == 403:
            return None
        raise


@pytest.mark.parametrize("provider", ["local", "pkcs11"])
def test_sigkill_between_key_created_and_status_written_leaves_one_key(
    provider: str,
    admin_api: client.ApiClient,
    user_api: Callable[..., client.ApiClient],
    operator_kubeconfig: Path,
    start_operator: Callable[..., OperatorProcess],
    tenant_factory: Callable[..., str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = _provider_env(provider, tmp_path, request)
    member = unique("eve")
    tenant = tenant_factory(members=[{"user": member, "role": "owner"}])
    home = f"tenant-{tenant}"
    halted = tmp_path / "halted"
    doomed = start_operator(**env, REGSANDBOX_TEST_HALT_BEFORE=f"Namespace:{halted}")
    doomed.wait_until(lambda: get(admin_api, "Namespace", home), 60, "the home namespace")
    name = unique("crash")
    sid = f"sbx-{tenant}-{name}"
    apply(admin_api, sandbox_body(name, tenant))
    doomed.wait_until(halted.exists, 90, "provisioning to pass keys.create")
    made = _keys_in_provider(provider, admin_api, sid, request)
    assert len(made) == 1, made  # the key exists ...
    assert "keyId" not in ((get(admin_api, "Sandbox", name, home) or {}).get("status") or {})
    assert get(admin_api, "Namespace", sid) is None  # ... and nothing after it was written
    doomed.kill()

    operator = start_operator(**env)

    def ready() -> dict[str, Any] | None:
        obj = get(admin_api, "Sandbox", name, home)
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    obj = operator.wait_until(ready, 120, "the sandbox to be Ready after the crash")
    assert _keys_in_provider(provider, admin_api, sid, request) == made  # still one: that one
    assert obj["status"]["keyId"] == made[0]
    assert len(list_objects(admin_api, "StorageClass", None, f"regsandbox.io/sandbox={sid}")) == 1

    # Before the end: a tenant member cannot read the wrapped key or the KEK.
    tenant_api = user_api(member)
    wrapped_name = _wrapped(admin_api, sid)[0]["metadata"]["name"]
    assert _readable(tenant_api, wrapped_name, SYSTEM_NS) is None
    assert _readable(tenant_api, KEK_SECRET, SYSTEM_NS) is None

    delete(admin_api, "Sandbox", name, home)
    operator.wait_until(lambda: get(admin_api, "Sandbox", name, home) is None, 120, "teardown")
    assert _keys_in_provider(provider, admin_api, sid, request) == []
    # After destroy, neither identity reads a wrapped key (or the volume passphrase that
    # lived in the sandbox namespace) back through the API server.
    operator_api = _api(operator_kubeconfig)
    for api in (operator_api, tenant_api):
        assert _readable(api, wrapped_name, SYSTEM_NS) is None
        assert _readable(api, "regsandbox-volume-key", sid) is None
        listed = _listable(api)
        assert all(s["metadata"]["annotations"]["regsandbox.io/sandbox-id"] != sid for s in listed)


def _listable(api: client.ApiClient) -> list[dict[str, Any]]:
    """The wrapped-key Secrets ``api``'s identity can list: none when forbidden."""
    try:
        return list_objects(api, "Secret", SYSTEM_NS, WRAPPED)
    except ApiException as exc:
        if exc.status == 403:
            return []
        raise


def _api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))
