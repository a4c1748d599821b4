"""What lets the operator provision many sandboxes at once, without a control plane."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sandbox.kube.cache as cache_module
from sandbox.api.sandbox import SandboxSpec
from sandbox.api.tenant import TenantSpec
from sandbox.keys.local import LocalKeyProvider, MemoryWrappedKeyStore, generate_kek
from sandbox.kube.cache import WatchedObjects
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.sandboxes import desired_objects
from sandbox.storage.profiles import LonghornProfile

from .helpers import sandbox_body


class _SlowStore(MemoryWrappedKeyStore):
    """A wrapped-key store whose writes take as long as an API round trip under load.

    It counts how many writes are under way at once, so a test can tell parallel writes
    from serialised ones without timing them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self._active = 0
        self.most_at_once = 0

    def put(self, sandbox_id: str, blob: bytes, *, replace: bool = False) -> bytes:
        with self._guard:
            self._active += 1
            self.most_at_once = max(self.most_at_once, self._active)
        try:
            time.sleep(0.2)
            return super().put(sandbox_id, blob, replace=replace)
        finally:
            with self._guard:
                self._active -= 1


def _keys(store: MemoryWrappedKeyStore, stripes: int = 64) -> LocalKeyProvider:
    return LocalKeyProvider(generate_kek(), store, lock_stripes=stripes)


def test_concurrent_creates_of_one_sandbox_make_one_key() -> None:
    keys = _keys(_SlowStore())
    made: list[Any] = []
    threads = [
        threading.Thread(target=lambda: made.append(keys.create("sbx-bank-a", "lu-1", {})))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 4
    assert len({ref.key_id for ref in made}) == 1
    assert keys.destroy("sbx-bank-a").outcome == "destroyed"
    assert keys.get("sbx-bank-a") is None


def test_lock_stripes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lock_stripes"):
        _keys(MemoryWrappedKeyStore(), stripes=0)


def test_new_keys_for_different_sandboxes_are_made_in_parallel() -> None:
    store = _SlowStore()
    keys = _keys(store)
    names = [f"sbx-bank-p{i}" for i in range(8)]
    threads = [
        threading.Thread(target=keys.create, args=(name, "lu-national-1", {})) for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One lock for all sandboxes would let one write through at a time; with 64 stripes
    # these 8 names share at most a couple, so several writes overlap.
    assert store.most_at_once > 1
    assert all(keys.get(name) is not None for name in names)


def test_one_lock_for_everything_would_be_seen() -> None:
    """The overlap counter above can fail: a single stripe serialises every write."""
    store = _SlowStore()
    keys = _keys(store, stripes=1)
    threads = [
        threading.Thread(target=keys.create, args=(f"sbx-bank-s{i}", "lu-national-1", {}))
        for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.most_at_once == 1


def _tenant(name: str, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": generation}, "spec": {"sector": "finance"}}


def test_watched_objects_are_read_without_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    monkeypatch.setattr(cache_module, "get", lambda api, kind, name: reads.append(name))
    watched = WatchedObjects("Tenant")
    watched.observe(None, _tenant("bank"))
    watched.observe("MODIFIED", _tenant("bank", generation=2))
    found = watched.read(None, "bank")
    assert found is not None
    assert found["metadata"]["generation"] == 2
    found["spec"]["sector"] = "health"  # a copy: the cache is not changed through it
    assert watched.read(None, "bank") == _tenant("bank", generation=2)
    assert reads == []


def test_deleted_unknown_or_stale_objects_are_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    live: dict[str, dict[str, Any]] = {"bank": _tenant("bank", generation=3)}
    reads: list[str] = []

    def read(api: Any, kind: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return live.get(name)

    monkeypatch.setattr(cache_module, "get", read)
    watched = WatchedObjects("Tenant", ttl=0.05)
    watched.observe("ADDED", _tenant("bank"))
    watched.observe("DELETED", _tenant("bank"))
    assert watched.read(None, "bank") == live["bank"]  # deleted: asked again
    assert watched.read(None, "other") is None  # never seen
    assert reads == ["bank", "other"]
    assert watched.read(None, "bank") == live["bank"]  # the read was remembered
    assert reads == ["bank", "other"]
    time.sleep(0.1)
    watched.read(None, "bank")  # too old to trust: a watch may have missed a delete
    assert reads == ["bank", "other", "bank"]


def test_a_read_racing_an_event_does_not_overwrite_it(monkeypatch: pytest.MonkeyPatch) -> None:
    watched = WatchedObjects("Tenant")

    def read(api: Any, kind: str, name: str) -> dict[str, Any] | None:
        watched.observe("DELETED", _tenant(name))  # arrives while the read is under way
        return _tenant(name)

    monkeypatch.setattr(cache_module, "get", read)
    watched.read(None, "bank")
    monkeypatch.setattr(cache_module, "get", lambda api, kind, name: None)
    assert watched.read(None, "bank") is None


def test_members_get_access_last_and_the_quota_is_written_with_the_claim_in_it() -> None:
    keys = _keys(MemoryWrappedKeyStore(), stripes=1)
    platform = Platform(
        api=None,  # type: ignore[arg-type]  # desired_objects makes no request
        engine=None,  # type: ignore[arg-type]
        audit=None,  # type: ignore[arg-type]
        keys=keys,
        storage=LonghornProfile(),
        cluster_region="onprem:lu-national-1",
        cluster_jurisdiction="LU",
    )
    body = sandbox_body("order", "bank", egress=[{"cidr": "10.0.0.0/8", "ports": [443]}])
    tenant = TenantSpec.model_validate(
        {
            "organisation": "Bank",
            "sector": "finance",
            "jurisdiction": "LU",
            "members": [{"user": "ada", "role": "member"}],
        }
    )
    spec = SandboxSpec.model_validate(body["spec"])
    key = keys.create("sbx-bank-order", "lu-national-1", {})
    kinds = [o["kind"] for o in desired_objects(platform, body, "bank", tenant, spec, key)]
    assert kinds[0] == "Namespace"
    assert kinds[-1] == "RoleBinding"
    assert kinds.index("LimitRange") < kinds.index("PersistentVolumeClaim")
    assert kinds.index("Secret") < kinds.index("PersistentVolumeClaim")
    # The quota right after the claim, seeded with it (sandbox.kube.quota), and before
    # anyone may act in the namespace.
    assert kinds.index("PersistentVolumeClaim") + 1 == kinds.index("ResourceQuota")
    assert kinds.index("ResourceQuota") < kinds.index("RoleBinding")
    names = [
        o["metadata"]["name"]
        for o in desired_objects(platform, body, "bank", tenant, spec, key)
        if o["kind"] == "NetworkPolicy"
    ]
    assert names == [
        "default-deny",
        "allow-dns",
        "allow-dataset-gateway",
        "allow-egress-allowlist",
    ]


_IMPORTS = """
import base64, os, sys
from pathlib import Path
from kubernetes import client
kek = Path(sys.argv[1])
kek.write_text(base64.b64encode(os.urandom(32)).decode())
os.environ.update(
    REGSANDBOX_CLUSTER_REGION="onprem:lu-national-1",
    REGSANDBOX_CLUSTER_JURISDICTION="LU",
    REGSANDBOX_KEY_PROVIDER=sys.argv[2],
)
if sys.argv[2] == "local":
    os.environ["REGSANDBOX_LOCAL_KEK_FILE"] = str(kek)
else:
    os.environ["REGSANDBOX_STORAGE_PROFILE"] = '{"kind": "aws-ebs"}'
import operators.main
from operators import runtime
from operators.settings import OperatorSettings
settings = OperatorSettings()
runtime.configure(settings)
import operators.handlers
from operators.wiring import key_provider
provider = key_provider(settings, client.ApiClient())
print(
    type(provider).__name__,
    *sorted(m for m in ("boto3", "botocore", "pkcs11", "sandbox.keys.pkcs11") if m in sys.modules),
)
"""


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("local", "LocalKeyProvider"),
        ("aws-kms", "AwsKmsKeyProvider boto3 botocore"),  # the control: it is imported then
    ],
)
def test_an_operator_on_the_local_provider_never_loads_boto3(
    tmp_path: Path, provider: str, expected: str
) -> None:
    """boto3 and botocore cost ~9 MB of the operator's memory, the PKCS#11 binding 2 MB;
    only aws-kms needs the first, only pkcs11 the second."""
    ran = subprocess.run(
        [sys.executable, "-c", _IMPORTS, str(tmp_path / "kek"), provider],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split("\n")[-2] == expected
