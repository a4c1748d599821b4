"""Storage profiles: "an encrypted volume with this sandbox's key" as Kubernetes manifests.

A profile turns a sandbox's :class:`~sandbox.keys.KeyRef` into a StorageClass for one CSI
driver — AWS EBS (``kmsKeyId``), Ceph RBD (``encryptionKMSID``) or Longhorn (a per-sandbox
Secret holding the LUKS passphrase) — and :func:`workspace_pvc` builds the ``workspace``
claim on it. No profile produces an unencrypted class: each output goes through
:func:`assert_encrypted`, which the operator also calls before applying anything.

EBS and Ceph StorageClasses carry key *ids* only. Longhorn needs the key itself, so its
profile also returns a Secret for the sandbox namespace; that Secret is the only
manifest here holding key material, and :class:`EncryptedStorage` never shows it in a
``repr``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sandbox.api.meta import Quantity
from sandbox.errors import SandboxError
from sandbox.keys.base import MANAGED_BY, SANDBOX_LABEL, KeyRef, validate_sandbox_id

__all__ = [
    "CEPH_RBD_DRIVER",
    "EBS_DRIVER",
    "KEY_ID_ANNOTATION",
    "KEY_PROVIDER_ANNOTATION",
    "LONGHORN_DRIVER",
    "WORKSPACE_PVC",
    "AnyProfile",
    "AwsEbsProfile",
    "CephRbdProfile",
    "EncryptedStorage",
    "LonghornProfile",
    "StorageProfile",
    "StorageProfileError",
    "UnencryptedStorageError",
    "assert_encrypted",
    "load_profile",
    "storage_class_name",
    "workspace_pvc",
]

EBS_DRIVER = "ebs.csi.aws.com"
"""Provisioner name of the AWS EBS CSI driver."""
CEPH_RBD_DRIVER = "rbd.csi.ceph.com"
"""Provisioner name of the Ceph CSI RBD driver."""
LONGHORN_DRIVER = "driver.longhorn.io"
"""Provisioner name of the Longhorn CSI driver."""

KEY_ID_ANNOTATION = "regsandbox.io/key-id"
"""Annotation naming the sandbox key a StorageClass encrypts with (an id, never material)."""
KEY_PROVIDER_ANNOTATION = "regsandbox.io/key-provider"
"""Annotation naming the key provider of that key."""

WORKSPACE_PVC = "workspace"
"""Name of the sandbox's encrypted volume claim."""

_CSI = "csi.storage.k8s.io"
_LONGHORN_SECRET_ROLES = ("provisioner", "node-publish", "node-stage", "node-expand")
_CEPH_SECRET_ROLES = ("provisioner", "controller-expand", "node-stage")
_QUANTITY: TypeAdapter[str] = TypeAdapter(Quantity)
_LEADING_NUMBER = re.compile(r"^[0-9.]+")


class StorageProfileError(SandboxError):
    """A profile cannot produce the requested storage; the message says what to change."""


class UnencryptedStorageError(StorageProfileError):
    """A StorageClass would not encrypt with the sandbox's own key; it must not be applied."""


def storage_class_name(sandbox_id: str) -> str:
    """The StorageClass of a sandbox: ``regsandbox-<sandbox-id>``."""
    return f"regsandbox-{validate_sandbox_id(sandbox_id)}"


def _labels(sandbox_id: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY, SANDBOX_LABEL: sandbox_id}


@dataclass(frozen=True)
class EncryptedStorage:
    """What a profile renders: the StorageClass and any Secrets it needs (Longhorn).

    Apply the Secrets before the claim is bound. Their ``data`` is key material: keep it
    out of logs, events and status; the ``repr`` shows only their names.
    """

    storage_class: dict[str, Any]
    """The StorageClass manifest (cluster-scoped)."""
    secrets: tuple[dict[str, Any], ...] = field(default=())
    """Secret manifests for the sandbox namespace, possibly holding key material."""

    def __repr__(self) -> str:
        names = [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in self.secrets]
        return (
            f"EncryptedStorage(storage_class={self.storage_class['metadata']['name']!r}, "
            f"secrets={names!r})"
        )


class _Profile(BaseModel):
    """Settings shared by every profile."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    fs_type: str = "ext4"
    """Filesystem made on new volumes (``csi.storage.k8s.io/fstype``)."""
    extra_parameters: dict[str, str] = Field(default_factory=dict)
    """More driver parameters; they can never switch encryption off or replace the key."""

    def _storage_class(
        self, provisioner: str, key: KeyRef, parameters: dict[str, str]
    ) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": storage_class_name(key.sandbox_id),
                "labels": _labels(key.sandbox_id),
                "annotations": {
                    KEY_ID_ANNOTATION: key.key_id,
                    KEY_PROVIDER_ANNOTATION: key.provider,
                },
            },
            "provisioner": provisioner,
            # Driver settings first; the encryption settings are written last and win.
            "parameters": {
                **self.extra_parameters,
                f"{_CSI}/fstype": self.fs_type,
                **parameters,
                "encrypted": "true",
            },
            "reclaimPolicy": "Delete",
            "allowVolumeExpansion": False,
            "volumeBindingMode": "WaitForFirstConsumer",
        }
        assert_encrypted(manifest)
        return manifest


class AwsEbsProfile(_Profile):
    """AWS EBS CSI driver: volumes encrypted with the sandbox's own KMS key (``aws-kms``)."""

    kind: Literal["aws-ebs"] = "aws-ebs"
    """Profile discriminator."""
    volume_type: str = "gp3"
    """EBS volume type (``type`` parameter): gp3, io2, …"""

    def render(
        self, key: KeyRef, namespace: str, data_key: bytes | None = None
    ) -> EncryptedStorage:
        """The StorageClass with ``encrypted: "true"`` and ``kmsKeyId`` = the key's ARN.

        ``namespace`` and ``data_key`` are unused: KMS keeps the key.
        """
        del namespace, data_key
        if key.provider != "aws-kms":
            raise StorageProfileError(
                f"the aws-ebs profile needs an aws-kms key, but sandbox {key.sandbox_id!r} has "
                f"a {key.provider} key; set the key provider to aws-kms"
            )
        return EncryptedStorage(
            self._storage_class(EBS_DRIVER, key, {"type": self.volume_type, "kmsKeyId": key.key_id})
        )


class CephRbdProfile(_Profile):
    """Ceph CSI RBD driver: LUKS-encrypted RBD images, passphrases kept by a ceph-csi KMS.

    ``encryptionKMSID`` names an entry of ceph-csi's KMS configuration
    (``ceph-csi-encryption-kms-config`` / ``csi-kms-connection-details``). By default each
    sandbox gets its own entry, ``regsandbox-<sandbox-id>``, which the operator registers
    pointing at the sandbox key; set ``kms_id`` to use one shared entry instead.
    """

    kind: Literal["ceph-rbd"] = "ceph-rbd"
    """Profile discriminator."""
    cluster_id: str = Field(min_length=1, max_length=36)
    """Ceph cluster id as listed in ceph-csi's ``ceph-csi-config``."""
    pool: str = Field(min_length=1)
    """RBD pool the images are created in."""
    kms_id: str | None = None
    """Fixed ``encryptionKMSID``; unset means ``regsandbox-<sandbox-id>`` per sandbox."""
    image_features: str = "layering"
    """RBD image features."""
    encryption_type: Literal["block", "file"] = "block"
    """``block`` (LUKS on the RBD device) or ``file`` (fscrypt)."""
    credentials_secret: str = "csi-rbd-secret"  # noqa: S105 - a Secret's name, not a password
    """Secret with the Ceph user id and key the driver provisions with (not a volume key)."""
    credentials_namespace: str = "ceph-csi"
    """Namespace of ``credentials_secret``."""

    def render(
        self, key: KeyRef, namespace: str, data_key: bytes | None = None
    ) -> EncryptedStorage:
        """The StorageClass with ``encrypted: "true"`` and the sandbox's ``encryptionKMSID``."""
        del namespace, data_key
        parameters = {
            "clusterID": self.cluster_id,
            "pool": self.pool,
            "imageFeatures": self.image_features,
            "encryptionType": self.encryption_type,
            "encryptionKMSID": self.kms_id or storage_class_name(key.sandbox_id),
        }
        for role in _CEPH_SECRET_ROLES:
            parameters[f"{_CSI}/{role}-secret-name"] = self.credentials_secret
            parameters[f"{_CSI}/{role}-secret-namespace"] = self.credentials_namespace
        return EncryptedStorage(self._storage_class(CEPH_RBD_DRIVER, key, parameters))


class LonghornProfile(_Profile):
    """Longhorn: LUKS (dm-crypt) volumes whose passphrase is a Secret in the sandbox namespace.

    The passphrase is the standard base64 text of the sandbox's 32-byte data key (256 bits
    of entropy, no bytes that could upset cryptsetup); the Secret carries it, base64-encoded
    again as the Secret API requires, under ``CRYPTO_KEY_VALUE``.
    """

    kind: Literal["longhorn"] = "longhorn"
    """Profile discriminator."""
    number_of_replicas: int = Field(default=3, ge=1)
    """Replicas per volume."""
    stale_replica_timeout: int = Field(default=2880, ge=1)
    """Minutes before a failed replica is cleaned up."""
    secret_name: str = "regsandbox-volume-key"  # noqa: S105 - a Secret's name, not a password
    """Name of the passphrase Secret in the sandbox namespace."""
    cipher: str = "aes-xts-plain64"
    """``CRYPTO_KEY_CIPHER``."""
    key_hash: str = "sha256"
    """``CRYPTO_KEY_HASH``."""
    key_size: int = 256
    """``CRYPTO_KEY_SIZE`` in bits."""
    pbkdf: str = "argon2i"
    """``CRYPTO_PBKDF``."""

    def render(
        self, key: KeyRef, namespace: str, data_key: bytes | None = None
    ) -> EncryptedStorage:
        """The StorageClass pointing every CSI secret role at the Secret, and that Secret."""
        if not data_key or len(data_key) < 32:
            raise StorageProfileError(
                f"the longhorn profile needs the 32-byte data key of sandbox {key.sandbox_id!r} "
                "(use the local key provider's data_key)"
            )
        if not namespace:
            raise StorageProfileError("the longhorn profile needs the sandbox namespace")
        parameters = {
            "numberOfReplicas": str(self.number_of_replicas),
            "staleReplicaTimeout": str(self.stale_replica_timeout),
            "fromBackup": "",
        }
        for role in _LONGHORN_SECRET_ROLES:
            parameters[f"{_CSI}/{role}-secret-name"] = self.secret_name
            parameters[f"{_CSI}/{role}-secret-namespace"] = namespace
        passphrase = base64.b64encode(bytes(data_key))
        values = {
            "CRYPTO_KEY_VALUE": passphrase,
            "CRYPTO_KEY_PROVIDER": b"secret",
            "CRYPTO_KEY_CIPHER": self.cipher.encode(),
            "CRYPTO_KEY_HASH": self.key_hash.encode(),
            "CRYPTO_KEY_SIZE": str(self.key_size).encode(),
            "CRYPTO_PBKDF": self.pbkdf.encode(),
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.secret_name,
                "namespace": namespace,
                "labels": _labels(key.sandbox_id),
                "annotations": {
                    KEY_ID_ANNOTATION: key.key_id,
                    KEY_PROVIDER_ANNOTATION: key.provider,
                },
            },
            "immutable": True,
            "data": {
                name: base64.b64encode(value).decode("ascii") for name, value in values.items()
            },
        }
        return EncryptedStorage(self._storage_class(LONGHORN_DRIVER, key, parameters), (secret,))


AnyProfile = AwsEbsProfile | CephRbdProfile | LonghornProfile
"""The type of any one profile."""

StorageProfile = Annotated[AnyProfile, Field(discriminator="kind")]
"""Any profile, chosen by its ``kind`` (for the operator's settings models)."""


class _ProfileSettings(BaseModel):
    """Envelope that lets pydantic pick the profile by ``kind``."""

    profile: StorageProfile


def load_profile(settings: Mapping[str, Any]) -> AnyProfile:
    """Build a profile from settings such as ``{"kind": "ceph-rbd", "cluster_id": …}``.

    Raises :class:`StorageProfileError` naming the problem when the settings are invalid.
    """
    try:
        return _ProfileSettings.model_validate({"profile": settings}).profile
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'][1:]) or 'kind'}: {item['msg']}"
            for item in error.errors(include_input=False)
        )
        raise StorageProfileError(f"invalid storage profile settings: {problems}") from None


def assert_encrypted(storage_class: Mapping[str, Any]) -> None:
    """Raise :class:`UnencryptedStorageError` unless the class encrypts with a sandbox key.

    Checks that it is a StorageClass of a known driver, that ``encrypted`` is the string
    ``"true"``, and that the driver-specific key reference is present: ``kmsKeyId`` (EBS),
    ``encryptionKMSID`` (Ceph RBD) or the per-volume secret references (Longhorn).
    """
    metadata = storage_class.get("metadata") or {}
    name = metadata.get("name", "<unnamed>") if isinstance(metadata, Mapping) else "<unnamed>"
    where = f"StorageClass {name!r}"
    if storage_class.get("kind") != "StorageClass":
        raise UnencryptedStorageError(
            f"{where} is a {storage_class.get('kind')!r}, not a StorageClass"
        )
    provisioner = storage_class.get("provisioner")
    parameters = storage_class.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise UnencryptedStorageError(f"{where} has malformed parameters")
    if provisioner not in (EBS_DRIVER, CEPH_RBD_DRIVER, LONGHORN_DRIVER):
        raise UnencryptedStorageError(
            f"{where} uses provisioner {provisioner!r}, whose encryption regsandbox cannot "
            f"check; use a profile for {EBS_DRIVER}, {CEPH_RBD_DRIVER} or {LONGHORN_DRIVER}"
        )
    if parameters.get("encrypted") != "true":
        raise UnencryptedStorageError(
            f'{where} does not set parameters.encrypted to "true"; sandboxes are never '
            "provisioned on unencrypted storage"
        )
    if provisioner == EBS_DRIVER and not parameters.get("kmsKeyId"):
        raise UnencryptedStorageError(
            f"{where} sets no kmsKeyId, so EBS would use the account's default key instead "
            "of the sandbox's own key; set kmsKeyId to the sandbox key ARN"
        )
    if provisioner == CEPH_RBD_DRIVER and not parameters.get("encryptionKMSID"):
        raise UnencryptedStorageError(
            f"{where} sets no encryptionKMSID; name the ceph-csi KMS entry of the sandbox key"
        )
    if provisioner == LONGHORN_DRIVER:
        missing = [
            f"{_CSI}/{role}-secret-{part}"
            for role in ("provisioner", "node-publish", "node-stage")
            for part in ("name", "namespace")
            if not parameters.get(f"{_CSI}/{role}-secret-{part}")
        ]
        if missing:
            raise UnencryptedStorageError(
                f"{where} lacks {', '.join(missing)}; Longhorn needs them to find the "
                "volume's passphrase Secret"
            )


def workspace_pvc(
    sandbox_id: str, namespace: str, size: str, storage_class: str | None = None
) -> dict[str, Any]:
    """The ``workspace`` PersistentVolumeClaim: ReadWriteOnce, ``size``, the encrypted class.

    ``size`` is the sandbox's storage quantity (e.g. ``50Gi``); ``storage_class`` defaults
    to :func:`storage_class_name` of the sandbox.
    """
    try:
        quantity = _QUANTITY.validate_python(size)
    except ValidationError:
        raise StorageProfileError(
            f"workspace size {size!r} of sandbox {sandbox_id!r} is not a Kubernetes quantity "
            "such as 50Gi"
        ) from None
    number = _LEADING_NUMBER.match(quantity)
    if number is None or not any(digit in "123456789" for digit in number.group()):
        raise StorageProfileError(f"workspace size of sandbox {sandbox_id!r} must be above zero")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": WORKSPACE_PVC, "namespace": namespace, "labels": _labels(sandbox_id)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class or storage_class_name(sandbox_id),
            "resources": {"requests": {"storage": quantity}},
        },
    }
