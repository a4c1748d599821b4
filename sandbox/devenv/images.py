"""Container images of the local data plane, built here from source and Debian packages.

No registry is involved at any point. Each image is written as an OCI image-layout
archive (:mod:`sandbox.devenv.oci`: ``oci-layout``, ``index.json``, ``blobs/``) and cached as
``~/.cache/regsandbox/images/NAME-KEY.tar``, where KEY is a SHA-256 over everything the
image is made of (source files, compiler or binary digests, Debian suite and package
list, pinned Python dependencies, the recipe itself). A second build with the same
inputs is a cache hit and does no work; change one input and the key changes.
:func:`import_images` loads archives into a containerd's ``k8s.io`` namespace with
``ctr images import``, where the kubelet finds them (pods use ``imagePullPolicy: Never``).

The images:

``pause``
    the pod sandbox process, compiled statically from ``pause.c`` (shipped with this
    package) with gcc;
``busybox``
    Debian's busybox-static with a link per applet and ``nobody`` (65534) in
    ``/etc/passwd``: the client and server of network tests;
``opa``
    the pinned ``opa`` binary from the tool cache (with the shared libraries it links),
    entrypoint ``/opa``: the operator's OPA sidecar;
``coredns``
    the pinned, static ``coredns`` binary from the tool cache, entrypoint ``/coredns``,
    user ``nobody``: the local node's cluster DNS (``kube-system/coredns``);
``regsandbox``
    what the repository's ``Dockerfile`` describes — a Python venv in
    ``/opt/regsandbox`` with the project's wheel and its dependencies, the policies in
    ``/opt/regsandbox/policies``, ``opa`` in ``/usr/local/bin``, user 10001 — assembled
    from Debian packages (``mmdebstrap``, which needs the Debian mirror, so never run it
    inside a network namespace without one). Its two layers are cached apart: the Debian
    base (suite and package list, one to three minutes cold) and the application
    (wheel, dependencies, policies, opa: about a minute), so a code change rebuilds only
    the latter. The dependencies are pinned to the versions installed where this runs,
    so the image runs the code the tests ran. The base is keyed by suite and packages,
    not by date: remove ``debian-*.tar`` from the cache to take in Debian's updates.

Every archive is written under a temporary name and renamed into place, and builds of
one image are serialised by a lock file, so concurrent sessions share the cache safely.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.resources
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from sandbox.devenv.oci import (
    EPOCH,
    LayerWriter,
    archive_ref,
    oci_arch,
    sha256_file,
    write_archive,
)
from sandbox.devenv.toolchain import TOOLS, find_tools_dir, tool_path
from sandbox.errors import ConfigurationError, SandboxError

__all__ = [
    "DEBIAN_MIRROR",
    "DEBIAN_SUITE",
    "IMAGES",
    "REGSANDBOX_PACKAGES",
    "WORKLOAD_CLIENT_PINS",
    "WORKLOAD_PYTHON",
    "ImageBuildError",
    "archive_ref",
    "build_image",
    "content_key",
    "image_cache_dir",
    "image_ref",
    "import_archive",
    "import_images",
]

Progress = Callable[[str], None]

RECIPE_VERSION = "1"
"""Part of every key: bump it when a recipe below changes what an image contains."""

DEBIAN_SUITE = "bookworm"
"""Debian release of the regsandbox image's base (the Dockerfile's ``-bookworm``)."""

DEBIAN_MIRROR = "http://deb.debian.org/debian"
"""Debian mirror mmdebstrap installs from."""

REGSANDBOX_PACKAGES = (
    "python3",
    "python3-venv",
    "ca-certificates",
    "libatomic1",
    "libstdc++6",
)
"""Debian packages of the regsandbox image on top of the ``essential`` set (sh, coreutils).

``libatomic1`` and ``libstdc++6`` are what native libraries in the wheels (regopy) link;
the build checks that every shared object in the venv finds its libraries, so a missing
one fails the build, not a pod."""

WORKLOAD_CLIENT_PINS = (
    # The S3 clients tenants' notebooks use (boto3, s3fs/fsspec for pandas), for the
    # data-plane tests of a pod that reads through the gateway's S3 API configured only
    # by environment. Their own venv: s3fs's aiobotocore pins a botocore older than the
    # gateway's. Resolved with `pip install --dry-run --report` for CPython 3.11.
    "aiobotocore==3.10.0",
    "aiohappyeyeballs==2.7.1",
    "aiohttp==3.14.5",
    "aioitertools==0.13.0",
    "aiosignal==1.4.0",
    "attrs==26.1.0",
    "boto3==1.43.117",
    "botocore==1.43.117",
    "frozenlist==1.8.0",
    "fsspec==2026.9.0",
    "idna==3.21",
    "jmespath==1.1.0",
    "multidict==7.2.1",
    "propcache==0.5.4",
    "python-dateutil==2.9.0.post0",
    "s3fs==2026.9.0",
    "s3transfer==0.19.3",
    "six==1.17.0",
    "typing_extensions==4.16.0",
    "urllib3==2.8.0",
    "wrapt==2.5.2",
    "yarl==1.25.1",
)
"""A tenant's S3 client libraries, in the regsandbox image's second venv at
:data:`WORKLOAD_PYTHON` (not on ``PATH``; the regsandbox venv is unchanged)."""

_WORKLOAD_VENV = "/opt/workload"
WORKLOAD_PYTHON = f"{_WORKLOAD_VENV}/bin/python"
"""The Python of the workload-clients venv in the regsandbox image."""

PAUSE_TAG = "3.10"
BUSYBOX_TAG = "1.35"

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_APP_UID = 10001
_VENV = "/opt/regsandbox"


class ImageBuildError(SandboxError):
    """An image could not be built or imported; the message names the failing step."""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


IMAGES: dict[str, str] = {
    "pause": "pod sandbox process (static, from pause.c)",
    "busybox": "Debian busybox-static with applet links, user nobody (65534)",
    "opa": "the pinned opa binary, entrypoint /opa (OPA sidecar)",
    "coredns": "the pinned static coredns binary, entrypoint /coredns (the node's DNS)",
    "regsandbox": "operator, gateway and audit service (the Dockerfile's contents)",
}
"""Every image this module builds, with what it is for."""


def image_cache_dir() -> Path:
    """The image cache: ``$REGSANDBOX_IMAGE_DIR`` or ``$XDG_CACHE_HOME/regsandbox/images``."""
    override = os.environ.get("REGSANDBOX_IMAGE_DIR")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "regsandbox" / "images"


def _repo_root(repo: Path | None) -> Path:
    return (repo or find_tools_dir().parent).resolve()


def _project_version(repo: Path) -> str:
    with (repo / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def image_ref(name: str, repo: Path | None = None) -> str:
    """The reference an image is imported as, e.g. ``localhost/pause:3.10``."""
    _check_name(name)
    if name == "pause":
        tag = PAUSE_TAG
    elif name == "busybox":
        tag = BUSYBOX_TAG
    elif name in ("opa", "coredns"):
        tag = TOOLS[name].version.removeprefix("v")
    else:
        tag = _project_version(_repo_root(repo))
    return f"localhost/{name}:{tag}"


def _check_name(name: str) -> None:
    if name not in IMAGES:
        raise ConfigurationError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")


# -- content keys ------------------------------------------------------------------------


def _tree_files(root: Path, subdirs: Iterable[str]) -> list[Path]:
    """The files under ``subdirs`` of ``root`` that belong to the source (no caches)."""
    found: list[Path] = []
    for sub in subdirs:
        base = root / sub
        if base.is_file():
            found.append(base)
            continue
        for path in base.rglob("*"):
            parts = path.relative_to(root).parts
            if any(p == "__pycache__" or p.endswith(".egg-info") for p in parts):
                continue
            if path.is_file() and path.suffix not in (".pyc", ".pyo"):
                found.append(path)
    return sorted(found)


_SOURCE_PATHS = ("pyproject.toml", "README.md", "LICENSE", "sandbox", "operators", "audit")
_POLICY_PATHS = ("policies",)


def _tree_digest(root: Path, subdirs: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for path in _tree_files(root, subdirs):
        rel = path.relative_to(root).as_posix()
        mode = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"{rel}\0{mode}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _runtime_pins(repo: Path) -> list[str]:
    """``name==version`` of every runtime dependency of the checkout, as installed here.

    The direct requirements come from the checkout's ``pyproject.toml``; the rest of the
    closure from the installed distributions' metadata, so the image gets exactly the
    versions this environment runs (and tests) with.
    """
    # Development-time only (the images are built from a checkout's environment), so
    # not imported at module level: the image itself has no `packaging`.
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with (repo / "pyproject.toml").open("rb") as handle:
        direct = tomllib.load(handle)["project"]["dependencies"]
    pending: list[tuple[Requirement, frozenset[str]]] = [
        (Requirement(r), frozenset()) for r in direct
    ]
    pins: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    while pending:
        req, _ = pending.pop()
        key = canonicalize_name(req.name)
        wanted = set(req.extras)
        if key in pins and wanted <= extras_seen[key]:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise ConfigurationError(
                f"{req.name} (a dependency of regsandbox) is not installed in {sys.prefix}; "
                "run `make venv` first"
            ) from None
        pins[key] = dist.version
        extras_seen.setdefault(key, set()).update(wanted)
        for line in dist.requires or []:
            child = Requirement(line)
            if child.marker is not None:
                environments = [{"extra": e} for e in extras_seen[key]] or [{"extra": ""}]
                if not any(child.marker.evaluate(env) for env in environments):
                    continue
            pending.append((child, frozenset(child.extras)))
    return sorted(f"{name}=={version}" for name, version in pins.items())


def _gcc_version() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageBuildError("gcc is not installed; it compiles the pause image (apt install gcc)")
    return _run([gcc, "-dumpfullversion"], "gcc -dumpfullversion").strip()


def _busybox_binary() -> Path:
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file():
            return candidate
    raise ImageBuildError("busybox is not installed; apt install busybox-static")


def _pause_source() -> bytes:
    return importlib.resources.files("sandbox.devenv").joinpath("pause.c").read_bytes()


def _base_inputs() -> dict[str, Any]:
    return {
        "suite": DEBIAN_SUITE,
        "mirror": DEBIAN_MIRROR,
        "packages": sorted(REGSANDBOX_PACKAGES),
        "arch": oci_arch(),
    }


def _inputs(name: str, repo: Path | None) -> dict[str, Any]:
    """Everything image ``name`` is made of, as a JSON-able document."""
    inputs: dict[str, Any] = {"recipe": RECIPE_VERSION, "image": name, "arch": oci_arch()}
    if name == "pause":
        inputs["pause.c"] = hashlib.sha256(_pause_source()).hexdigest()
        inputs["gcc"] = _gcc_version()
    elif name == "busybox":
        inputs["busybox"] = sha256_file(_busybox_binary())
    elif name in ("opa", "coredns"):
        inputs[name] = sha256_file(tool_path(name))
    else:
        root = _repo_root(repo)
        inputs["base"] = _base_inputs()
        inputs["sources"] = _tree_digest(root, _SOURCE_PATHS)
        inputs["policies"] = _tree_digest(root, _POLICY_PATHS)
        inputs["pins"] = _runtime_pins(root)
        inputs["workload_pins"] = list(WORKLOAD_CLIENT_PINS)
        inputs["opa"] = sha256_file(tool_path("opa"))
        inputs["ref"] = image_ref(name, root)
    return inputs


def _digest_of(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def content_key(name: str, repo: Path | None = None) -> str:
    """The content key of image ``name``: equal inputs, equal key (first 16 hex digits)."""
    _check_name(name)
    return _digest_of(_inputs(name, repo))[:16]


# -- small helpers -----------------------------------------------------------------------


def _run(cmd: Sequence[str], what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
        raise ImageBuildError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- recipes -----------------------------------------------------------------------------

_NOBODY_LINE = "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"


def _build_pause(work: Path, out: Path, ref: str) -> None:
    source = work / "pause.c"
    source.write_bytes(_pause_source())
    binary = work / "pause"
    _run(["gcc", "-Os", "-static", "-o", str(binary), str(source)], "gcc (pause.c)")
    _run(["strip", str(binary)], "strip pause")
    layer = work / "layer.tar"
    writer = LayerWriter(layer)
    writer.copy("pause", binary, 0o755)
    writer.close()
    config = {
        "User": "65535:65535",
        "Entrypoint": ["/pause"],
        "WorkingDir": "/",
        "Env": [f"PATH={_SYSTEM_PATH}"],
    }
    write_archive(out, ref, [layer], config, "gcc -Os -static pause.c")


def _build_busybox(work: Path, out: Path, ref: str) -> None:
    busybox = _busybox_binary()
    applets = _run([str(busybox), "--list"], "busybox --list").split()
    layer = work / "layer.tar"
    writer = LayerWriter(layer)
    writer.copy("bin/busybox", busybox, 0o755)
    for applet in sorted(set(applets) - {"busybox"}):
        if re.fullmatch(r"[A-Za-z0-9_.\[-]+", applet):
            writer.symlink(f"bin/{applet}", "busybox")
    writer.directory("tmp", 0o1777)
    writer.file("etc/passwd", f"root:x:0:0:root:/root:/bin/sh\n{_NOBODY_LINE}".encode())
    writer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    writer.file("www/index.html", b"hello from busybox\n")
    writer.close()
    config = {
        "Entrypoint": ["/bin/sh"],
        "WorkingDir": "/",
        "Env": [f"PATH={_SYSTEM_PATH}"],
    }
    write_archive(out, ref, [layer], config, f"busybox-static {BUSYBOX_TAG} with applet links")


def _shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads (empty for a static binary)."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if result.returncode != 0:  # "not a dynamic executable"
        return []
    libraries: list[Path] = []
    for line in result.stdout.splitlines():
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            libraries.append(Path(match.group(1)))
    return libraries


def _build_opa(work: Path, out: Path, ref: str) -> None:
    opa = tool_path("opa")
    layer = work / "layer.tar"
    writer = LayerWriter(layer)
    writer.copy("opa", opa, 0o755)
    for library in _shared_libraries(opa):
        writer.copy(library.as_posix().lstrip("/"), library.resolve(), 0o755)
    writer.directory("tmp", 0o1777)
    writer.file("etc/passwd", f"root:x:0:0:root:/root:/sbin/nologin\n{_NOBODY_LINE}".encode())
    writer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    writer.close()
    config = {
        "User": "65534:65534",
        "Entrypoint": ["/opa"],
        "Cmd": ["run", "--server"],
        "WorkingDir": "/",
        "Env": [f"PATH={_SYSTEM_PATH}"],
    }
    write_archive(out, ref, [layer], config, f"opa {TOOLS['opa'].version} from the tool cache")


def _build_coredns(work: Path, out: Path, ref: str) -> None:
    coredns = tool_path("coredns")
    if _shared_libraries(coredns):
        raise ImageBuildError(f"{coredns} is not static; it is built with CGO_ENABLED=0")
    layer = work / "layer.tar"
    writer = LayerWriter(layer)
    writer.copy("coredns", coredns, 0o755)
    writer.file("etc/passwd", f"root:x:0:0:root:/root:/sbin/nologin\n{_NOBODY_LINE}".encode())
    writer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    writer.close()
    config = {
        "User": "65534:65534",
        "Entrypoint": ["/coredns"],
        "WorkingDir": "/",
        "Env": [f"PATH={_SYSTEM_PATH}"],
    }
    version = TOOLS["coredns"].version
    write_archive(out, ref, [layer], config, f"coredns {version} from the tool cache")


def _debian_sources() -> list[str]:
    security = DEBIAN_MIRROR.removesuffix("/debian") + "/debian-security"
    return [
        f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main",
        f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main",
        f"deb {security} {DEBIAN_SUITE}-security main",
    ]


def _base_layer(cache: Path, progress: Progress) -> Path:
    """The Debian layer of the regsandbox image (mmdebstrap), cached by suite and packages."""
    key = _digest_of({"recipe": RECIPE_VERSION, **_base_inputs(), "sources": _debian_sources()})
    out = cache / f"debian-{DEBIAN_SUITE}-{key[:16]}.tar"
    with _locked(cache / ".debian.lock"):
        if out.is_file():
            progress(f"debian base: cached at {out}")
            return out
        mmdebstrap = shutil.which("mmdebstrap")
        if mmdebstrap is None:
            raise ImageBuildError("mmdebstrap is not installed (apt install mmdebstrap)")
        progress(f"debian base: mmdebstrap {DEBIAN_SUITE} (about two minutes, needs the mirror)")
        started = time.monotonic()
        partial = out.with_name(f".{out.stem}.partial.tar")
        cmd = [
            mmdebstrap,
            "--mode=root",
            "--variant=essential",
            "--quiet",
            f"--include={','.join(REGSANDBOX_PACKAGES)}",
            "--skip=output/dev",
            # No manuals, translations or docs in the image; the licences stay.
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            DEBIAN_SUITE,
            str(partial),
            *_debian_sources(),
        ]
        try:
            _run(cmd, "mmdebstrap")
        except ImageBuildError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(out)
        progress(f"debian base: built in {time.monotonic() - started:.0f}s -> {out}")
        for old in cache.glob("debian-*.tar"):
            if old != out:
                old.unlink(missing_ok=True)
        return out


def _chroot(root: Path, *args: str, what: str) -> str:
    env = {
        "PATH": _SYSTEM_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        # Hash-based .pyc files: their bytes do not depend on when they were written.
        "SOURCE_DATEEPOCH": str(EPOCH + 1),
    }
    return _run(["chroot", str(root), *args], what, env=env)


def _check_libraries(root: Path) -> None:
    """Every shared object in the image's venvs finds its libraries."""
    linked = _chroot(
        root,
        "/bin/sh",
        "-c",
        f"find {_VENV} {_WORKLOAD_VENV} -type f -name '*.so*' -exec ldd {{}} + 2>&1",
        what="ldd of the venv's shared objects",
    )
    unresolved = sorted({line.split()[0] for line in linked.splitlines() if "not found" in line})
    if unresolved:
        raise ImageBuildError(
            f"libraries missing from the image: {', '.join(unresolved)}; add their Debian "
            "packages to REGSANDBOX_PACKAGES"
        )


def _install_workload_clients(
    root: Path, work: Path, pip: list[str], pip_env: dict[str, str]
) -> None:
    """The tenants' S3 clients into their own venv of the image, checked like the main one."""
    wheels = work / "client-wheels"
    pins = work / "client-pins.txt"
    pins.write_text("\n".join(WORKLOAD_CLIENT_PINS) + "\n")
    _run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), "-r", str(pins)],
        "pip wheel (workload S3 clients)",
        env=pip_env,
    )
    staged = root / "client-wheels"  # outside /opt/workload: not in the layer
    shutil.copytree(wheels, staged)
    _chroot(root, "/usr/bin/python3", "-m", "venv", _WORKLOAD_VENV, what="venv (workload)")
    names = sorted(f"/client-wheels/{w.name}" for w in staged.glob("*.whl"))
    _chroot(
        root,
        WORKLOAD_PYTHON,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
        *names,
        what="pip install (workload S3 clients)",
    )
    _chroot(root, WORKLOAD_PYTHON, "-m", "pip", "check", what="pip check (workload venv)")
    _chroot(root, WORKLOAD_PYTHON, "-c", "import boto3, s3fs", what="import the S3 clients")


def _build_regsandbox(work: Path, out: Path, ref: str, repo: Path, progress: Progress) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building the regsandbox image needs root (mmdebstrap, chroot)")
    base = _base_layer(out.parent, progress)

    progress("regsandbox: building the wheel and fetching the pinned dependencies")
    wheels = work / "wheels"
    source = work / "src"
    for path in _tree_files(repo, _SOURCE_PATHS):
        target = source / path.relative_to(repo)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    pip_env = {**os.environ, "SOURCE_DATEEPOCH": str(EPOCH + 315532800)}  # zip needs >=1980
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(source)],
        "pip wheel (the project)",
        env=pip_env,
    )
    pins = work / "pins.txt"
    pins.write_text("\n".join(_runtime_pins(repo)) + "\n")
    _run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), "-r", str(pins)],
        "pip wheel (dependencies)",
        env=pip_env,
    )

    progress("regsandbox: installing into the image's venv")
    root = work / "root"
    root.mkdir()
    _run(["tar", "-xf", str(base), "-C", str(root), "--numeric-owner"], "unpacking the base")
    (root / "dev").mkdir(exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    staged = root / "wheels"  # outside /opt/regsandbox: not in the layer
    shutil.copytree(wheels, staged)
    _chroot(root, "/usr/bin/python3", "-m", "venv", _VENV, what="python3 -m venv")
    names = sorted(f"/wheels/{w.name}" for w in staged.glob("*.whl"))
    _chroot(
        root,
        f"{_VENV}/bin/python",
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
        *names,
        what="pip install (into the image)",
    )
    # Every dependency present and compatible, every native library resolvable, every
    # entrypoint importable.
    _chroot(root, f"{_VENV}/bin/python", "-m", "pip", "check", what="pip check in the image")
    _install_workload_clients(root, work, pip, pip_env)
    _check_libraries(root)
    for script in ("sandboxctl", "sandbox-operator"):
        _chroot(root, f"{_VENV}/bin/{script}", "--help", what=f"{script} --help in the image")
    policies = root / _VENV.lstrip("/") / "policies"
    for path in _tree_files(repo, _POLICY_PATHS):
        target = policies / path.relative_to(repo / "policies")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    passwd = (root / "etc/passwd").read_text()
    group = (root / "etc/group").read_text()
    passwd += f"regsandbox:x:{_APP_UID}:{_APP_UID}::/nonexistent:/usr/sbin/nologin\n"
    group += f"regsandbox:x:{_APP_UID}:\n"

    layer = work / "app.tar"
    writer = LayerWriter(layer)
    writer.file("etc/passwd", passwd.encode())
    writer.file("etc/group", group.encode())
    writer.copy("usr/local/bin/opa", tool_path("opa"), 0o755)
    writer.tree(_VENV.lstrip("/"), root / _VENV.lstrip("/"))
    writer.tree(_WORKLOAD_VENV.lstrip("/"), root / _WORKLOAD_VENV.lstrip("/"))
    writer.close()
    config = {
        "User": f"{_APP_UID}:{_APP_UID}",
        "Cmd": ["sandbox-operator", "run"],
        "WorkingDir": "/",
        "Env": [
            f"PATH={_VENV}/bin:{_SYSTEM_PATH}",
            "LANG=C.UTF-8",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
            f"REGSANDBOX_POLICY_DIR={_VENV}/policies",
            "REGSANDBOX_OPA_CHECK_BINARY=/usr/local/bin/opa",
        ],
        "Labels": {
            "org.opencontainers.image.title": "regsandbox",
            "org.opencontainers.image.licenses": "Apache-2.0",
            "org.opencontainers.image.description": (
                "Confidential-data regulatory sandboxes on Kubernetes"
            ),
            "org.opencontainers.image.version": ref.rsplit(":", 1)[1],
        },
    }
    write_archive(out, ref, [base, layer], config, "regsandbox venv, policies and opa")


# -- public API --------------------------------------------------------------------------

_KEEP = 3
"""Archives kept per image (newest first); older ones are removed after a build."""


def build_image(
    name: str,
    *,
    repo: Path | None = None,
    force: bool = False,
    progress: Progress = _progress,
) -> Path:
    """Build image ``name`` unless its archive is cached; return the archive's path.

    ``repo`` is the regsandbox checkout (default: found from the working directory);
    only the ``regsandbox`` image reads it. ``force`` rebuilds even on a cache hit (the
    Debian base layer stays cached).
    """
    _check_name(name)
    if name != "regsandbox":
        return _build(name, None, force, progress)
    # Build from a snapshot of the checkout, so the key names exactly what was built even
    # while someone edits the working tree.
    with tempfile.TemporaryDirectory(prefix="regsandbox-src-") as scratch:
        snapshot = Path(scratch)
        root = _repo_root(repo)
        for path in _tree_files(root, (*_SOURCE_PATHS, *_POLICY_PATHS)):
            target = snapshot / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        return _build(name, snapshot, force, progress)


def _build(name: str, root: Path | None, force: bool, progress: Progress) -> Path:
    key = content_key(name, root)
    ref = image_ref(name, root)
    cache = image_cache_dir()
    out = cache / f"{name}-{key}.tar"
    with _locked(cache / f".{name}.lock"):
        if out.is_file() and not force:
            progress(f"{ref}: cached at {out}")
            return out
        # Holding the lock, any scratch directory of this image is a killed build's.
        for stale in cache.glob(f".{name}-build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        progress(f"{ref}: building")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=cache, prefix=f".{name}-build-") as scratch:
            work = Path(scratch)
            if name == "pause":
                _build_pause(work, out, ref)
            elif name == "busybox":
                _build_busybox(work, out, ref)
            elif name == "opa":
                _build_opa(work, out, ref)
            elif name == "coredns":
                _build_coredns(work, out, ref)
            else:
                assert root is not None
                _build_regsandbox(work, out, ref, root, progress)
        progress(f"{ref}: built in {time.monotonic() - started:.0f}s -> {out}")
        older = sorted(
            (p for p in cache.glob(f"{name}-*.tar") if p != out),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in older[_KEEP - 1 :]:
            old.unlink(missing_ok=True)
    return out


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except OSError:
        return 0


def import_archive(socket: Path | str, archive: Path, *, progress: Progress = _progress) -> str:
    """Import one archive into containerd at ``socket`` (namespace ``k8s.io``); its ref."""
    ctr = shutil.which("ctr")
    if ctr is None:
        raise ImageBuildError("ctr is not installed (it comes with apt's containerd)")
    if not stat.S_ISSOCK(_mode(Path(socket))):
        raise ImageBuildError(
            f"no containerd socket at {socket}; start the node first "
            "(sandboxctl dev up --data-plane) or name its socket"
        )
    ref = archive_ref(archive)
    started = time.monotonic()
    _run(
        [ctr, "--address", str(socket), "-n", "k8s.io", "images", "import", str(archive)],
        f"ctr images import {ref} (containerd at {socket})",
    )
    progress(f"{ref}: imported in {time.monotonic() - started:.1f}s")
    return ref


def import_images(
    socket: Path | str,
    names: Iterable[str],
    *,
    repo: Path | None = None,
    progress: Progress = _progress,
) -> list[str]:
    """Build (or reuse) each image and import it into containerd at ``socket``.

    Images land in the ``k8s.io`` namespace, where the kubelet's CRI looks. Returns the
    references imported, e.g. ``["localhost/pause:3.10"]``.
    """
    archives = [build_image(name, repo=repo, progress=progress) for name in names]
    return [import_archive(socket, archive, progress=progress) for archive in archives]
