"""Helpers for testing code against a real local control plane.

Used by regsandbox's own test suite and available to anyone who writes policies,
examples or extensions and wants to test them the same way::

    with running_control_plane(tmp_path) as plane:
        api = api_client(plane.admin_kubeconfig)
        alice = api_client(plane.add_user("alice", ["tenant-a"]))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client

from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.tenancy import sandbox_manifest
from sandbox.kube.clients import install_crds, kube_client

__all__ = ["api_client", "install_crds", "running_control_plane", "sandbox_manifest"]


@contextmanager
def running_control_plane(directory: Path, timeout: float = 120.0) -> Iterator[ControlPlane]:
    """Start a control plane in ``directory`` for the duration of the block."""
    plane = ControlPlane(directory)
    plane.up(timeout=timeout)
    try:
        yield plane
    finally:
        plane.down()


def api_client(kubeconfig: Path) -> client.ApiClient:
    """A kubernetes ApiClient authenticated by the kubeconfig's client certificate."""
    return kube_client(kubeconfig)
