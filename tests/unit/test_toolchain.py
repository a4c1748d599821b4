"""The pinned tool versions in Python agree with the Go modules that build them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandbox.devenv.toolchain import KUBERNETES_VERSION, TOOLS, bin_dir, tool_path
from sandbox.errors import ConfigurationError, ToolBuildError


def _required(go_mod: Path, module: str) -> str:
    text = go_mod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    assert match, f"{module} is not required in {go_mod}"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_manifest_matches_go_mod(repo_root: Path, name: str) -> None:
    tool = TOOLS[name]
    go_mod = repo_root / "tools" / tool.module_dir / "go.mod"
    assert _required(go_mod, tool.module) == tool.version
    assert tool.package in go_mod.read_text(), f"{tool.package} missing from the tool block"


def test_kubernetes_staging_modules_are_pinned_to_the_same_release(repo_root: Path) -> None:
    text = (repo_root / "tools/kube/go.mod").read_text()
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => \S+ (v\S+)", text, re.MULTILINE)
    assert len(replaced) > 25
    assert {version for _, version in replaced} == {"v0.34.4"}


def test_cache_is_keyed_by_name_and_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REGSANDBOX_BIN_DIR", str(tmp_path))
    assert bin_dir() == tmp_path
    with pytest.raises(ToolBuildError, match="make tools"):
        tool_path("etcd")
    (tmp_path / "etcd-v3.6.16").write_text("")
    assert tool_path("etcd") == tmp_path / "etcd-v3.6.16"
    with pytest.raises(ConfigurationError, match="unknown tool"):
        tool_path("dockerd")


def test_the_node_is_built_from_the_control_planes_kubernetes_release() -> None:
    """kubelet, kube-proxy and kube-scheduler must match the API server they talk to."""
    node = [TOOLS[n] for n in ("kubelet", "kube-proxy", "kube-scheduler", "kube-apiserver")]
    assert {(t.module_dir, t.module, t.version) for t in node} == {
        ("kube", "k8s.io/kubernetes", KUBERNETES_VERSION)
    }


def test_data_plane_tools_are_pinned() -> None:
    assert TOOLS["kube-router"].version == "v2.1.0"
    assert TOOLS["coredns"].package == "github.com/coredns/coredns"
