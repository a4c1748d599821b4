"""The local development control plane: pinned tools, a test PKI and real servers.

Everything here exists so that developers, tests and ``make up`` run regsandbox against
a real etcd, kube-apiserver and kube-controller-manager built from Go modules.
"""

from sandbox.devenv.controlplane import ControlPlane, ControlPlaneState
from sandbox.devenv.toolchain import TOOLS, Tool, bin_dir, build_tools, tool_path

__all__ = [
    "TOOLS",
    "ControlPlane",
    "ControlPlaneState",
    "Tool",
    "bin_dir",
    "build_tools",
    "tool_path",
]
