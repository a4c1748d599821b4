"""Pinned tool binaries built from Go modules in ``tools/`` and cached outside the repo.

Each tool is built once per version into the cache directory as ``NAME-VERSION``
(for example ``~/.cache/regsandbox/bin/kube-apiserver-v1.34.4``) and never rebuilt
while that file exists. The versions here must match the ``go.mod`` files in
``tools/``; a unit test holds them together.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.errors import ConfigurationError, ToolBuildError

__all__ = [
    "KUBERNETES_VERSION",
    "TOOLS",
    "Tool",
    "bin_dir",
    "build_tools",
    "find_tools_dir",
    "tool_path",
]

KUBERNETES_VERSION = "v1.34.4"
"""The Kubernetes release the control plane is built from."""

_KUBE_LDFLAGS = (
    f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
    "-X k8s.io/component-base/version.gitMajor=1",
    "-X k8s.io/component-base/version.gitMinor=34",
    "-X k8s.io/component-base/version.gitTreeState=clean",
)


@dataclass(frozen=True)
class Tool:
    """One pinned binary: where its Go module lives and which main package to build."""

    name: str
    """File name stem of the binary, e.g. ``kube-apiserver``."""
    module_dir: str
    """Directory under ``tools/`` holding the pinning ``go.mod``."""
    package: str
    """Go main package to build."""
    module: str
    """Go module whose required version is the tool's version."""
    version: str
    """Pinned version; must equal the ``require`` line for ``module`` in ``go.mod``."""
    ldflags: tuple[str, ...] = field(default=())
    """Extra ``-ldflags`` (version stamping)."""
    env: tuple[tuple[str, str], ...] = field(default=())
    """Extra build environment, e.g. ``CGO_ENABLED=0`` for a binary that runs in a pod."""
    tags: tuple[str, ...] = field(default=())
    """Go build tags, e.g. to leave out code the project never runs."""

    @property
    def filename(self) -> str:
        """Cache file name, keyed by name and version."""
        return f"{self.name}-{self.version}"


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3", "v3.6.16"),
        Tool(
            "kube-apiserver",
            "kube",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes",
            KUBERNETES_VERSION,
            _KUBE_LDFLAGS,
        ),
        Tool(
            "kube-controller-manager",
            "kube",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes",
            KUBERNETES_VERSION,
            _KUBE_LDFLAGS,
        ),
        Tool(
            "kubectl",
            "kube",
            "k8s.io/kubernetes/cmd/kubectl",
            "k8s.io/kubernetes",
            KUBERNETES_VERSION,
            _KUBE_LDFLAGS,
        ),
        Tool(
            "kubelet",
            "kube",
            "k8s.io/kubernetes/cmd/kubelet",
            "k8s.io/kubernetes",
            KUBERNETES_VERSION,
            _KUBE_LDFLAGS,
        ),
        Tool(
            "kube-proxy",
            "kube",
            "k8s.io/kubernetes/cmd/kube-proxy",
            "k8s.io/kubernetes",
            KUBERNETES_VERSION,
            _KUBE_LDFLAGS,
        ),
        Tool(
            "kube-scheduler",
            "kube",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "k8s.io/kubernetes",
            KUBERNETES_VERSION,
            _KUBE_LDFLAGS,
        ),
        Tool(
            "kube-router",
            "kube-router",
            "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
            "github.com/cloudnativelabs/kube-router/v2",
            "v2.1.0",
            ("-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v2.1.0",),
        ),
        Tool(
            "coredns",
            "coredns",
            "github.com/coredns/coredns",
            "github.com/coredns/coredns",
            "v1.14.7",
            ("-X github.com/coredns/coredns/coremain.GitCommit=v1.14.7",),
            # Static: it runs in the kube-dns pods, whose image has no C library.
            (("CGO_ENABLED", "0"),),
        ),
        Tool(
            "opa",
            "opa",
            "github.com/open-policy-agent/opa",
            "github.com/open-policy-agent/opa",
            "v1.22.3",
        ),
        Tool(
            "regal",
            "regal",
            "github.com/styrainc/regal",
            "github.com/styrainc/regal",
            "v0.35.1",
            ("-X github.com/styrainc/regal/pkg/version.Version=v0.35.1",),
        ),
        Tool(
            "helm",
            "helm",
            "helm.sh/helm/v4/cmd/helm",
            "helm.sh/helm/v4",
            "v4.3.1",
            ("-X helm.sh/helm/v4/internal/version.version=v4.3.1",),
        ),
        Tool(
            "minio",
            "minio",
            "github.com/minio/minio",
            "github.com/minio/minio",
            "v0.0.0-20260212201848-7aac2a2c5b7c",
        ),
        Tool(
            "promtool",
            "promtool",
            "github.com/prometheus/prometheus/cmd/promtool",
            "github.com/prometheus/prometheus",
            "v0.316.0",
            ("-X github.com/prometheus/common/version.Version=v0.316.0",),
            # Checks and unit-tests the chart's alerting rules. Built without Prometheus's
            # service-discovery plugins (cloud SDKs): 1,117 packages instead of 1,364.
            tags=("remove_all_sd",),
        ),
    )
}
"""Every pinned tool, by name."""


def bin_dir() -> Path:
    """The binary cache: ``$REGSANDBOX_BIN_DIR`` or ``$XDG_CACHE_HOME/regsandbox/bin``."""
    override = os.environ.get("REGSANDBOX_BIN_DIR")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "regsandbox" / "bin"


def tool_path(name: str) -> Path:
    """Path of the cached binary for ``name``; raises if the tool is unknown or not built."""
    try:
        tool = TOOLS[name]
    except KeyError:
        raise ConfigurationError(f"unknown tool {name!r}; known: {', '.join(TOOLS)}") from None
    path = bin_dir() / tool.filename
    if not path.is_file():
        raise ToolBuildError(f"{path} is missing: run `make tools` to build the pinned tools")
    return path


def find_tools_dir(start: Path | None = None) -> Path:
    """Locate the repository's ``tools/`` directory from ``start`` (default: cwd) upwards."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        tools = candidate / "tools"
        if (tools / "kube" / "go.mod").is_file():
            return tools
    raise ConfigurationError(
        f"no tools/ directory with Go modules above {here}; run from a regsandbox checkout"
    )


def build_tools(
    names: Iterable[str] | None = None,
    *,
    tools_dir: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> list[Path]:
    """Build the named tools (default: all) that are missing from the cache.

    Builds write to a temporary name and are renamed into place, so a killed build
    never leaves a half-written binary that looks cached.
    """
    go = shutil.which("go")
    if go is None:
        raise ToolBuildError("the `go` command is not on PATH; install Go 1.24 or newer")
    tools_root = tools_dir or find_tools_dir()
    selected = list(names) if names else list(TOOLS)
    unknown = [n for n in selected if n not in TOOLS]
    if unknown:
        raise ConfigurationError(
            f"unknown tool(s): {', '.join(unknown)}; known: {', '.join(TOOLS)}"
        )
    target_dir = bin_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    built: list[Path] = []
    for index, name in enumerate(selected, start=1):
        tool = TOOLS[name]
        target = target_dir / tool.filename
        step = f"[{index}/{len(selected)}] {tool.filename}"
        if target.is_file() and not force:
            progress(f"{step}: cached at {target}")
            built.append(target)
            continue
        progress(f"{step}: building {tool.package} (cold builds take minutes)")
        started = time.monotonic()
        partial = target.with_name(f".{tool.filename}.partial")
        cmd = [go, "build", "-trimpath", "-ldflags", " ".join(("-s", "-w", *tool.ldflags))]
        if tool.tags:
            cmd += ["-tags", ",".join(tool.tags)]
        cmd += ["-o", str(partial), tool.package]
        env = {**os.environ, "GOFLAGS": os.environ.get("GOFLAGS", "-buildvcs=false")}
        env.update(dict(tool.env))
        result = subprocess.run(
            cmd,
            cwd=tools_root / tool.module_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            tail = "\n".join(result.stderr.strip().splitlines()[-20:])
            raise ToolBuildError(f"building {tool.filename} failed:\n{tail}")
        partial.replace(target)
        progress(f"{step}: built in {time.monotonic() - started:.0f}s -> {target}")
        built.append(target)
    return built
