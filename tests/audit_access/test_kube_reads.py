"""Compliance officers read the log as themselves, on the real control plane.

What must hold (issue 16): a tenant auditor of tenant A gets 403 for any entry, listing or
proof of tenant B and 200 with verifiable proofs for A's; a user with no binding gets
403; a token for another audience is refused. The API server decides (TokenReview,
SubjectAccessReview against the chart's roles); nothing here is mocked.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from kubernetes import client

from audit.checkpoint import open_checkpoint
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.note import b64decode
from audit.proof import TlogProof, verify_tlog_proof
from sandbox.provision.names import tenant_namespace
from tests.audit_access.conftest import STATIC_READER, Setup, event
from tests.audit_service.conftest import LAYOUTS, wait_for

pytestmark = [
    pytest.mark.integration,
    # Each test runs against the writer's listener and against the read server.
    pytest.mark.parametrize("setup", LAYOUTS, indirect=True),
]


def _get(setup: Setup, path: str, who: str | None, **params: object) -> httpx.Response:
    headers = {}
    if who is not None:
        token = STATIC_READER if who == "static" else setup.tokens[who]
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{setup.url}{path}", headers=headers, params=params, timeout=30)


def _tenant_of(data: bytes) -> str | None:
    tenant = json.loads(data)["resource"].get("tenant")
    return tenant if isinstance(tenant, str) else None


def test_a_tenant_auditor_lists_their_entries_each_with_a_proof_that_verifies(
    setup: Setup,
) -> None:
    seen: list[int] = []
    start: int | None = 0
    while start is not None:
        answer = _get(
            setup, f"/v1/tenants/{setup.tenant_a}/entries", "tenant-a", start=start, limit=2
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        checkpoint = open_checkpoint(
            page["checkpoint"].encode(), [setup.signer.verifier], origin=setup.log.origin
        )
        assert checkpoint.size == page["size"]
        for item in page["entries"]:
            data = base64.b64decode(item["entry"])
            assert _tenant_of(data) == setup.tenant_a
            proof = [b64decode(h, "hash") for h in item["inclusion"]]
            verify_inclusion(
                leaf_hash(data), item["index"], checkpoint.size, proof, checkpoint.root
            )
            seen.append(item["index"])
        start = page["next"]
    assert seen == setup.indices[setup.tenant_a]


def test_a_tenant_auditor_fetches_an_entry_a_receipt_and_a_consistency_proof(
    setup: Setup,
) -> None:
    mine = setup.indices[setup.tenant_a][1]
    one = _get(setup, f"/v1/tenants/{setup.tenant_a}/entries/{mine}", "tenant-a")
    assert one.status_code == 200, one.text
    body = one.json()
    checkpoint = open_checkpoint(body["checkpoint"].encode(), [setup.signer.verifier])
    data = base64.b64decode(body["entry"])
    verify_inclusion(
        leaf_hash(data),
        mine,
        checkpoint.size,
        [b64decode(h, "hash") for h in body["inclusion"]],
        checkpoint.root,
    )
    receipt = _get(setup, f"/v1/tenants/{setup.tenant_a}/receipt/{mine}", "tenant-a")
    assert receipt.status_code == 200, receipt.text
    verify_tlog_proof(TlogProof.parse(receipt.content), data, [setup.signer.verifier])

    old = checkpoint
    setup.log.append(event(setup.tenant_b, 99))
    setup.log.publish_checkpoint()
    new_note = _get(setup, f"/v1/tenants/{setup.tenant_a}/checkpoint", "tenant-a")
    assert new_note.status_code == 200
    new = open_checkpoint(new_note.content, [setup.signer.verifier])
    assert new.size == old.size + 1
    proof = _get(setup, f"/v1/tenants/{setup.tenant_a}/proof/consistency", "tenant-a", old=old.size)
    assert proof.status_code == 200, proof.text
    hashes = [b64decode(h, "hash") for h in proof.json()["hashes"]]
    verify_consistency(old.size, new.size, hashes, old.root, new.root)


def test_a_tenant_auditor_gets_403_for_everything_of_another_tenant(setup: Setup) -> None:
    a, b = setup.tenant_a, setup.tenant_b
    theirs = setup.indices[b][0]
    platform = setup.indices[None][0]
    refused = [
        (f"/v1/tenants/{b}/entries", {}),
        (f"/v1/tenants/{b}/entries/{theirs}", {}),
        (f"/v1/tenants/{b}/checkpoint", {}),
        (f"/v1/tenants/{b}/proof/inclusion", {"index": theirs}),
        (f"/v1/tenants/{b}/proof/consistency", {"old": 1}),
        (f"/v1/tenants/{b}/receipt/{theirs}", {}),
        # B's entries and platform events asked for through A's own scope
        (f"/v1/tenants/{a}/entries/{theirs}", {}),
        (f"/v1/tenants/{a}/proof/inclusion", {"index": theirs}),
        (f"/v1/tenants/{a}/receipt/{theirs}", {}),
        (f"/v1/tenants/{a}/entries/{platform}", {}),
        # the whole log, in every form
        ("/v1/checkpoint", {}),
        (f"/v1/entries/{theirs}", {}),
        ("/v1/entries", {"start": 0, "end": 2}),
        ("/v1/proof/inclusion", {"index": theirs}),
        ("/v1/proof/consistency", {"old": 1}),
        (f"/v1/receipt/{theirs}", {}),
        ("/tlog/checkpoint", {}),
        ("/tlog/tile/0/000.p/5", {}),
        ("/tlog/tile/entries/000.p/5", {}),
    ]
    for path, params in refused:
        answer = _get(setup, path, "tenant-a", **params)
        assert answer.status_code == 403, (path, answer.status_code, answer.text)
        assert setup.tenant_b not in answer.text or path.startswith(f"/v1/tenants/{b}")


def test_a_listing_of_the_own_tenant_holds_no_other_tenants_bytes(setup: Setup) -> None:
    answer = _get(setup, f"/v1/tenants/{setup.tenant_a}/entries", "tenant-a", limit=1000)
    assert answer.status_code == 200
    assert setup.tenant_b not in answer.text
    assert "policy.changed" not in answer.text


def test_a_user_with_no_binding_gets_403_and_a_token_for_another_audience_401(
    setup: Setup,
) -> None:
    a = setup.tenant_a
    for path in (f"/v1/tenants/{a}/entries", f"/v1/tenants/{a}/checkpoint", "/v1/checkpoint"):
        assert _get(setup, path, "nobody").status_code == 403, path
        refused = _get(setup, path, "wrong-audience")
        assert refused.status_code == 401, (path, refused.text)
        assert "invalid_token" in refused.headers["www-authenticate"]
        assert _get(setup, path, None).status_code == 401
    garbage = httpx.get(
        f"{setup.url}/v1/tenants/{a}/entries",
        headers={"Authorization": "Bearer not-a-token"},
        timeout=30,
    )
    assert garbage.status_code == 401


def test_the_platform_auditor_and_the_static_fallback_read_the_whole_log(setup: Setup) -> None:
    for who in ("platform", "static"):
        assert _get(setup, "/v1/checkpoint", who).status_code == 200, who
        assert _get(setup, "/v1/entries", who, start=0, end=3).status_code == 200, who
        assert _get(setup, f"/v1/tenants/{setup.tenant_b}/entries", who).status_code == 200, who
        assert _get(setup, "/tlog/checkpoint", who).status_code == 200, who


def test_a_removed_role_binding_stops_the_tenant_auditor(setup: Setup) -> None:
    rbac = client.RbacAuthorizationV1Api(setup.admin)
    namespace = tenant_namespace(setup.tenant_a)
    name = f"tenant-a-regsandbox-tenant-auditor-{setup.suffix}"[:63]
    path = f"/v1/tenants/{setup.tenant_a}/checkpoint"
    binding = rbac.read_namespaced_role_binding(name, namespace)
    rbac.delete_namespaced_role_binding(name, namespace)
    try:
        # The service caches nothing here (ttl 0); the API server's RBAC cache is an
        # informer, so wait on the condition itself.
        wait_for(lambda: _get(setup, path, "tenant-a").status_code == 403, "403 after unbind")
    finally:
        binding.metadata = client.V1ObjectMeta(name=name)
        rbac.create_namespaced_role_binding(namespace, binding)
    wait_for(lambda: _get(setup, path, "tenant-a").status_code == 200, "200 after rebind")
