"""Shared fixtures: one real control plane per test session and clients acting as users."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from sandbox.devenv.controlplane import ControlPlane
from sandbox.testing import api_client, running_control_plane

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout the tests run from."""
    return REPO


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real etcd + kube-apiserver + kube-controller-manager for the whole session.

    Set ``REGSANDBOX_TEST_CP_DIR`` to keep its logs somewhere you can read afterwards.
    """
    directory = Path(os.environ.get("REGSANDBOX_TEST_CP_DIR") or tmp_path_factory.mktemp("cp"))
    with running_control_plane(directory) as plane:
        yield plane


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> client.ApiClient:
    """An ApiClient with cluster-admin rights (group system:masters)."""
    return api_client(control_plane.admin_kubeconfig)


UserFactory = Callable[..., client.ApiClient]


@pytest.fixture(scope="session")
def user_api(control_plane: ControlPlane) -> UserFactory:
    """Factory: ``user_api("alice", "group-a", ...)`` -> ApiClient acting as that user."""

    def make(name: str, *groups: str) -> client.ApiClient:
        return api_client(control_plane.add_user(name, list(groups)))

    return make
