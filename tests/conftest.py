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

SERVER_FIXTURES = {
    "control_plane": "integration",
    "data_plane": "integration",
    "opa_binary": "opa",
    "minio": "s3",
    "s3": "s3",
}
"""Fixtures that start (or need the binary of) a real server, and the marker they imply.

A test that uses one of them, directly or through another fixture, gets the marker, so
``make test-unit`` (``-m "not integration and not opa and not s3"``) never starts a
server, whether or not the test's module remembered to mark itself.
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the servers its fixtures start (see :data:`SERVER_FIXTURES`)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture in sorted(used & SERVER_FIXTURES.keys()):
            marker = SERVER_FIXTURES[fixture]
            if item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))


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
