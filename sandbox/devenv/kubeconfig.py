"""Kubeconfig files for client-certificate users of the local control plane."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from sandbox.devenv.pki import IssuedCert, write_private_key

__all__ = ["CLUSTER_NAME", "render_kubeconfig", "write_kubeconfig"]

CLUSTER_NAME = "regsandbox-dev"
"""Cluster and context name used in every generated kubeconfig."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_kubeconfig(server: str, ca_pem: bytes, user: str, cert: IssuedCert) -> str:
    """A self-contained kubeconfig (certificates embedded) for ``user`` at ``server``."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert.cert_pem),
                    "client-key-data": _b64(cert.key_pem),
                },
            }
        ],
        "contexts": [
            {
                "name": f"{user}@{CLUSTER_NAME}",
                "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": "default"},
            }
        ],
        "current-context": f"{user}@{CLUSTER_NAME}",
        "preferences": {},
    }
    return str(yaml.safe_dump(doc, sort_keys=False))


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, user: str, cert: IssuedCert) -> Path:
    """Write a kubeconfig with mode 0600 (it holds a private key) and return its path."""
    write_private_key(path, render_kubeconfig(server, ca_pem, user, cert).encode())
    return path
