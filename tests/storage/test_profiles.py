"""Storage profiles: encrypted StorageClasses per CSI driver, never an unencrypted one."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from sandbox.errors import SandboxError
from sandbox.keys import KeyRef, LocalKeyProvider, MemoryWrappedKeyStore, generate_kek
from sandbox.storage import (
    AwsEbsProfile,
    CephRbdProfile,
    EncryptedStorage,
    LonghornProfile,
    StorageProfile,
    StorageProfileError,
    UnencryptedStorageError,
    assert_encrypted,
    load_profile,
    storage_class_name,
    workspace_pvc,
)

SANDBOX_ID = "acme-claims"
NAMESPACE = "sbx-acme-claims"
CREATED = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
KMS_ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KMS_KEY = KeyRef(SANDBOX_ID, KMS_ARN, "aws-kms", "eu-west-1", CREATED)
LOCAL_KEY = KeyRef(SANDBOX_ID, "local-0123456789abcdef", "local", "eu-west-1", CREATED)
DATA_KEY = bytes(range(1, 33))
CEPH = CephRbdProfile(cluster_id="b9127830-b0cc-4e34-aa47-9d1a2e9949a8", pool="sandboxes")


def _common(storage_class: dict[str, Any], provisioner: str) -> dict[str, str]:
    """Check what every sandbox StorageClass shares; return its parameters."""
    assert storage_class["apiVersion"] == "storage.k8s.io/v1"
    assert storage_class["kind"] == "StorageClass"
    assert storage_class["provisioner"] == provisioner
    metadata = storage_class["metadata"]
    assert metadata["name"] == f"regsandbox-{SANDBOX_ID}"
    assert metadata["labels"] == {
        "app.kubernetes.io/managed-by": "regsandbox",
        "regsandbox.io/sandbox": SANDBOX_ID,
    }
    assert storage_class["reclaimPolicy"] == "Delete"
    assert storage_class["allowVolumeExpansion"] is False
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    parameters: dict[str, str] = storage_class["parameters"]
    assert parameters["encrypted"] == "true"
    assert all(isinstance(value, str) for value in parameters.values())
    return parameters


def _material_forms(key: bytes) -> list[str]:
    return [
        key.hex(),
        base64.b64encode(key).decode(),
        base64.b64encode(base64.b64encode(key)).decode(),
    ]


# --- AWS EBS ------------------------------------------------------------------------------


def test_ebs_uses_the_sandbox_kms_key() -> None:
    rendered = AwsEbsProfile().render(KMS_KEY, NAMESPACE)
    parameters = _common(rendered.storage_class, "ebs.csi.aws.com")
    assert parameters["kmsKeyId"] == KMS_ARN
    assert parameters["type"] == "gp3"
    assert parameters["csi.storage.k8s.io/fstype"] == "ext4"
    assert rendered.storage_class["metadata"]["annotations"] == {
        "regsandbox.io/key-id": KMS_ARN,
        "regsandbox.io/key-provider": "aws-kms",
    }
    assert rendered.secrets == ()


def test_ebs_refuses_a_local_key() -> None:
    with pytest.raises(StorageProfileError, match="aws-kms"):
        AwsEbsProfile().render(LOCAL_KEY, NAMESPACE, DATA_KEY)


def test_extra_parameters_cannot_switch_encryption_off_or_swap_the_key() -> None:
    profile = AwsEbsProfile(
        extra_parameters={"encrypted": "false", "kmsKeyId": "alias/aws/ebs", "iops": "4000"}
    )
    parameters = profile.render(KMS_KEY, NAMESPACE).storage_class["parameters"]
    assert parameters["encrypted"] == "true"
    assert parameters["kmsKeyId"] == KMS_ARN
    assert parameters["iops"] == "4000"


# --- Ceph RBD -----------------------------------------------------------------------------


def test_ceph_rbd_parameters() -> None:
    rendered = CEPH.render(LOCAL_KEY, NAMESPACE, DATA_KEY)
    parameters = _common(rendered.storage_class, "rbd.csi.ceph.com")
    assert parameters["clusterID"] == "b9127830-b0cc-4e34-aa47-9d1a2e9949a8"
    assert parameters["pool"] == "sandboxes"
    assert parameters["encryptionKMSID"] == f"regsandbox-{SANDBOX_ID}"
    assert parameters["encryptionType"] == "block"
    assert parameters["imageFeatures"] == "layering"
    for role in ("provisioner", "controller-expand", "node-stage"):
        assert parameters[f"csi.storage.k8s.io/{role}-secret-name"] == "csi-rbd-secret"
        assert parameters[f"csi.storage.k8s.io/{role}-secret-namespace"] == "ceph-csi"
    assert rendered.secrets == ()


def test_ceph_rbd_with_a_shared_kms_entry() -> None:
    profile = CEPH.model_copy(update={"kms_id": "vault-tenants"})
    assert profile.render(KMS_KEY, NAMESPACE).storage_class["parameters"]["encryptionKMSID"] == (
        "vault-tenants"
    )


def test_ceph_rbd_needs_cluster_and_pool() -> None:
    with pytest.raises(ValidationError):
        CephRbdProfile(cluster_id="", pool="sandboxes")
    with pytest.raises(ValidationError):
        CephRbdProfile.model_validate({"cluster_id": "c"})


@pytest.mark.parametrize("profile", [AwsEbsProfile(), CEPH], ids=["ebs", "ceph"])
def test_no_key_material_in_ebs_or_ceph_classes(profile: AwsEbsProfile | CephRbdProfile) -> None:
    provider = LocalKeyProvider(generate_kek(), MemoryWrappedKeyStore())
    provider.create(SANDBOX_ID, "eu-west-1", {})
    data_key = provider.data_key(SANDBOX_ID)
    rendered = profile.render(KMS_KEY, NAMESPACE, data_key)
    text = json.dumps(rendered.storage_class)
    for form in _material_forms(data_key):
        assert form not in text
    assert rendered.secrets == ()


# --- Longhorn -----------------------------------------------------------------------------


def test_longhorn_class_points_every_secret_role_at_the_sandbox_secret() -> None:
    rendered = LonghornProfile().render(LOCAL_KEY, NAMESPACE, DATA_KEY)
    parameters = _common(rendered.storage_class, "driver.longhorn.io")
    for role in ("provisioner", "node-publish", "node-stage", "node-expand"):
        assert parameters[f"csi.storage.k8s.io/{role}-secret-name"] == "regsandbox-volume-key"
        assert parameters[f"csi.storage.k8s.io/{role}-secret-namespace"] == NAMESPACE
    assert parameters["numberOfReplicas"] == "3"
    assert parameters["staleReplicaTimeout"] == "2880"
    text = json.dumps(rendered.storage_class)
    for form in _material_forms(DATA_KEY):
        assert form not in text


def test_longhorn_secret_carries_the_data_key() -> None:
    rendered = LonghornProfile().render(LOCAL_KEY, NAMESPACE, DATA_KEY)
    (secret,) = rendered.secrets
    assert secret["kind"] == "Secret"
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "regsandbox-volume-key"
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert secret["metadata"]["labels"]["regsandbox.io/sandbox"] == SANDBOX_ID
    data = {name: base64.b64decode(value) for name, value in secret["data"].items()}
    assert base64.b64decode(data["CRYPTO_KEY_VALUE"]) == DATA_KEY
    assert data["CRYPTO_KEY_PROVIDER"] == b"secret"
    assert data["CRYPTO_KEY_CIPHER"] == b"aes-xts-plain64"
    assert data["CRYPTO_KEY_HASH"] == b"sha256"
    assert data["CRYPTO_KEY_SIZE"] == b"256"
    assert data["CRYPTO_PBKDF"] == b"argon2i"


def test_longhorn_needs_the_data_key_and_namespace() -> None:
    with pytest.raises(StorageProfileError, match="data key"):
        LonghornProfile().render(LOCAL_KEY, NAMESPACE)
    with pytest.raises(StorageProfileError, match="namespace"):
        LonghornProfile().render(LOCAL_KEY, "", DATA_KEY)


def test_rendered_repr_hides_secret_data() -> None:
    rendered = LonghornProfile().render(LOCAL_KEY, NAMESPACE, DATA_KEY)
    text = repr(rendered)
    assert text == (
        f"EncryptedStorage(storage_class='regsandbox-{SANDBOX_ID}', "
        f"secrets=['{NAMESPACE}/regsandbox-volume-key'])"
    )
    assert isinstance(rendered, EncryptedStorage)


# --- assert_encrypted ---------------------------------------------------------------------


@pytest.fixture(params=["ebs", "ceph", "longhorn"])
def good_class(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "ebs":
        return AwsEbsProfile().render(KMS_KEY, NAMESPACE).storage_class
    if request.param == "ceph":
        return CEPH.render(KMS_KEY, NAMESPACE).storage_class
    return LonghornProfile().render(LOCAL_KEY, NAMESPACE, DATA_KEY).storage_class


def test_rendered_classes_pass(good_class: dict[str, Any]) -> None:
    assert_encrypted(good_class)


@pytest.mark.parametrize("value", ["false", "False", "TRUE", True, "", None])
def test_encrypted_flag_must_be_the_string_true(good_class: dict[str, Any], value: object) -> None:
    bad = copy.deepcopy(good_class)
    bad["parameters"]["encrypted"] = value
    with pytest.raises(UnencryptedStorageError, match='encrypted to "true"'):
        assert_encrypted(bad)


def test_missing_encrypted_flag_is_refused(good_class: dict[str, Any]) -> None:
    bad = copy.deepcopy(good_class)
    del bad["parameters"]["encrypted"]
    with pytest.raises(UnencryptedStorageError, match="never"):
        assert_encrypted(bad)


def test_ebs_without_kms_key_is_refused() -> None:
    bad = AwsEbsProfile().render(KMS_KEY, NAMESPACE).storage_class
    del bad["parameters"]["kmsKeyId"]
    with pytest.raises(UnencryptedStorageError, match="kmsKeyId"):
        assert_encrypted(bad)


def test_ceph_without_kms_id_is_refused() -> None:
    bad = CEPH.render(KMS_KEY, NAMESPACE).storage_class
    bad["parameters"]["encryptionKMSID"] = ""
    with pytest.raises(UnencryptedStorageError, match="encryptionKMSID"):
        assert_encrypted(bad)


def test_longhorn_without_secret_refs_is_refused() -> None:
    bad = LonghornProfile().render(LOCAL_KEY, NAMESPACE, DATA_KEY).storage_class
    del bad["parameters"]["csi.storage.k8s.io/node-stage-secret-name"]
    with pytest.raises(UnencryptedStorageError, match="node-stage-secret-name"):
        assert_encrypted(bad)


def test_unknown_provisioner_and_kind_are_refused() -> None:
    with pytest.raises(UnencryptedStorageError, match="cannot"):
        assert_encrypted(
            {
                "kind": "StorageClass",
                "metadata": {"name": "standard"},
                "provisioner": "rancher.io/local-path",
                "parameters": {"encrypted": "true"},
            }
        )
    with pytest.raises(UnencryptedStorageError, match="not a StorageClass"):
        assert_encrypted({"kind": "ConfigMap", "metadata": {"name": "x"}})
    assert issubclass(UnencryptedStorageError, SandboxError)


# --- profile selection and PVC ------------------------------------------------------------


def test_profiles_are_chosen_by_kind() -> None:
    assert isinstance(load_profile({"kind": "aws-ebs"}), AwsEbsProfile)
    assert isinstance(load_profile({"kind": "longhorn"}), LonghornProfile)
    ceph = load_profile({"kind": "ceph-rbd", "cluster_id": "c1", "pool": "p"})
    assert isinstance(ceph, CephRbdProfile)
    assert ceph.render(KMS_KEY, NAMESPACE).storage_class["parameters"]["pool"] == "p"


def test_bad_profile_settings_say_what_is_wrong() -> None:
    with pytest.raises(StorageProfileError, match=r"kind|hostpath"):
        load_profile({"kind": "hostpath"})
    with pytest.raises(StorageProfileError, match="pool"):
        load_profile({"kind": "ceph-rbd", "cluster_id": "c1"})


def test_profile_fits_in_a_settings_model() -> None:
    class Settings(BaseModel):
        storage: StorageProfile

    settings = Settings.model_validate({"storage": {"kind": "longhorn", "number_of_replicas": 2}})
    assert isinstance(settings.storage, LonghornProfile)
    assert settings.storage.number_of_replicas == 2


def test_workspace_pvc() -> None:
    pvc = workspace_pvc(SANDBOX_ID, NAMESPACE, "50Gi")
    assert pvc == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "workspace",
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/managed-by": "regsandbox",
                "regsandbox.io/sandbox": SANDBOX_ID,
            },
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class_name(SANDBOX_ID),
            "resources": {"requests": {"storage": "50Gi"}},
        },
    }


@pytest.mark.parametrize("size", ["0", "0Gi", "0.0", "lots", "-5Gi", ""])
def test_workspace_pvc_refuses_bad_sizes(size: str) -> None:
    with pytest.raises(StorageProfileError):
        workspace_pvc(SANDBOX_ID, NAMESPACE, size)
