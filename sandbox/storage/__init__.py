"""Encrypted storage for sandboxes: StorageClass and PVC manifests for common CSI drivers.

See :mod:`sandbox.storage.profiles`. Every StorageClass made here encrypts with the
sandbox's own key, and :func:`assert_encrypted` refuses any that would not.
"""

from sandbox.storage.profiles import (
    CEPH_RBD_DRIVER,
    EBS_DRIVER,
    KEY_ID_ANNOTATION,
    KEY_PROVIDER_ANNOTATION,
    LONGHORN_DRIVER,
    WORKSPACE_PVC,
    AnyProfile,
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
