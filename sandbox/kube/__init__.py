"""Thin helpers over the official kubernetes client: server-side apply, reads, deletes."""

from sandbox.kube.apply import (
    FIELD_MANAGER,
    KINDS,
    KindInfo,
    apply,
    create_or_apply,
    delete,
    get,
    list_objects,
    object_path,
)
from sandbox.kube.cache import WatchedObjects

__all__ = [
    "FIELD_MANAGER",
    "KINDS",
    "KindInfo",
    "WatchedObjects",
    "apply",
    "create_or_apply",
    "delete",
    "get",
    "list_objects",
    "object_path",
]
