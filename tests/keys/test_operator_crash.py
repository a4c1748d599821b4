"""The real operator, killed with SIGKILL between "key created" and "status written".

Issue #17: ``kill -9`` of the operator at that moment must leave exactly one key per
sandbox with every provider, and a destroyed key must not be readable back through the
API server by the operator's identity or a tenant's. The operator runs as a process
under the chart's RBAC against the session control plane, with ``local`` (wrapped keys
in Secrets), ``pkcs11`` (a SoftHSM2 token) and ``aws-kms`` (moto's server); the kill
point is the operator's crash-test switch ``REGSANDBOX_TEST_HALT_BEFORE=StorageClass:<marker>``:
a first provisioning stops for good right after ``keys.create`` returned and before any
object but the namespace (created first: it is the sandbox's claim on its name) or the
status is written.

moto serves only AWS region names, so the ``aws-kms`` operator runs as a cluster in
``aws:eu-central-1`` (jurisdiction DE) with the aws-ebs storage profile, for a DE tenant;
the KMS endpoint is moto's URL. With aws-kms the operator is also killed inside
``keys.create``, between CreateKey and CreateAlias (``REGSANDBOX_TEST_KILL_AT``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pkcs11
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.keys.base import SANDBOX_LABEL
from sandbox.keys.pkcs11 import kek_label
from sandbox.keys.secret_store import KEK_SECRET
from sandbox.kube.apply import apply, delete, get, list_objects
from tests.keys.conftest import TOKEN_LABEL, USER_PIN, SoftHsm
from tests.lifecycle.helpers import SYSTEM_NS, condition, sandbox_body, unique

pytestmark = pytest.mark.integration

WRAPPED = "regsandbox.io/key=wrapped-data-key"


KMS_REGION = "eu-central-1"
KMS_SITE = {"jurisdiction": "DE", "region": f"aws:{KMS_REGION}"}
"""Where the aws-kms operator's cluster is (moto knows only AWS region names)."""


def _provider_env(provider: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if provider == "local":
        return {"REGSANDBOX_KEY_PROVIDER": "local"}
    if provider == "aws-kms":
        endpoint: str = request.getfixturevalue("moto_kms_endpoint")
        return {
            "REGSANDBOX_KEY_PROVIDER": "aws-kms",
            "REGSANDBOX_KMS_ENDPOINT_URL": endpoint,
            "REGSANDBOX_KMS_REGIONS": json.dumps([KMS_REGION]),
            "REGSANDBOX_CLUSTER_REGION": KMS_SITE["region"],
            "REGSANDBOX_CLUSTER_JURISDICTION": KMS_SITE["jurisdiction"],
            "REGSANDBOX_STORAGE_PROFILE": json.dumps({"kind": "aws-ebs"}),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": KMS_REGION,
        }
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


def _kms_keys(endpoint: str, sid: str) -> list[tuple[str, str]]:
    """(ARN, state) of every KMS key tagged for ``sid``, asked of KMS itself."""
    kms = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "kms", region_name=KMS_REGION, endpoint_url=endpoint
    )
    found = []
    for key in kms.list_keys()["Keys"]:
        tags = kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]
        if {"TagKey": SANDBOX_LABEL, "TagValue": sid} in tags:
            metadata = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
            found.append((metadata["Arn"], metadata["KeyState"]))
    return sorted(found)


def _keys_in_provider(
    provider: str, api: client.ApiClient, sid: str, request: pytest.FixtureRequest
) -> list[str]:
    """Every live key the provider holds for ``sid``: wrapped Secrets, token objects, or
    KMS keys (which must all be enabled: none left pending deletion or orphaned)."""
    if provider == "aws-kms":
        assert _wrapped(api, sid) == []  # KMS keeps the key: nothing of it in the cluster
        keys = _kms_keys(request.getfixturevalue("moto_kms_endpoint"), sid)
        return [arn for arn, state in keys if state == "Enabled"]
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


@pytest.mark.parametrize("provider", ["local", "pkcs11", "aws-kms"])
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
    site = KMS_SITE if provider == "aws-kms" else {}
    tenant = tenant_factory(
        members=[{"user": member, "role": "owner"}],
        **{k: v for k, v in site.items() if k != "region"},
    )
    home = f"tenant-{tenant}"
    halted = tmp_path / "halted"
    doomed = start_operator(**env, REGSANDBOX_TEST_HALT_BEFORE=f"StorageClass:{halted}")
    doomed.wait_until(lambda: get(admin_api, "Namespace", home), 60, "the home namespace")
    name = unique("crash")
    sid = f"sbx-{tenant}-{name}"
    apply(admin_api, sandbox_body(name, tenant, **{k: v for k, v in site.items() if k == "region"}))
    doomed.wait_until(halted.exists, 90, "provisioning to pass keys.create")
    made = _keys_in_provider(provider, admin_api, sid, request)
    assert len(made) == 1, made  # the key exists ...
    assert "keyId" not in ((get(admin_api, "Sandbox", name, home) or {}).get("status") or {})
    # ... and nothing after it was written (the namespace, the sandbox's claim on its
    # name, comes before the key)
    assert not list_objects(admin_api, "StorageClass", None, f"regsandbox.io/sandbox={sid}")
    assert get(admin_api, "NetworkPolicy", "default-deny", sid) is None
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
    if provider == "aws-kms":
        endpoint = request.getfixturevalue("moto_kms_endpoint")
        assert _kms_keys(endpoint, sid) == [(made[0], "Enabled")]  # none pending deletion
        delete(admin_api, "Sandbox", name, home)
        operator.wait_until(lambda: get(admin_api, "Sandbox", name, home) is None, 120, "teardown")
        assert _kms_keys(endpoint, sid) == [(made[0], "PendingDeletion")]
        return

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


def test_sigkill_between_create_key_and_create_alias_leaves_one_kms_key(
    admin_api: client.ApiClient,
    start_operator: Callable[..., OperatorProcess],
    tenant_factory: Callable[..., str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The operator dies inside ``keys.create``: KMS made the key, no alias names it."""
    env = _provider_env("aws-kms", tmp_path, request)
    endpoint = request.getfixturevalue("moto_kms_endpoint")
    tenant = tenant_factory(jurisdiction=KMS_SITE["jurisdiction"])
    home = f"tenant-{tenant}"
    doomed = start_operator(**env, REGSANDBOX_TEST_KILL_AT="kms-after-create-key")
    doomed.wait_until(lambda: get(admin_api, "Namespace", home), 60, "the home namespace")
    name = unique("orphan")
    sid = f"sbx-{tenant}-{name}"
    apply(admin_api, sandbox_body(name, tenant, region=KMS_SITE["region"]))
    assert doomed.proc is not None
    assert doomed.proc.wait(timeout=90) == -9  # it killed itself right after CreateKey
    orphan = _kms_keys(endpoint, sid)
    assert [state for _, state in orphan] == ["Enabled"]  # a key no alias finds

    operator = start_operator(**env)

    def ready() -> dict[str, Any] | None:
        obj = get(admin_api, "Sandbox", name, home)
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    obj = operator.wait_until(ready, 120, "the sandbox to be Ready after the crash")
    assert _kms_keys(endpoint, sid) == orphan  # adopted: still exactly that one key
    assert obj["status"]["keyId"] == orphan[0][0]
    delete(admin_api, "Sandbox", name, home)
    operator.wait_until(lambda: get(admin_api, "Sandbox", name, home) is None, 120, "teardown")
    assert _kms_keys(endpoint, sid) == [(orphan[0][0], "PendingDeletion")]
