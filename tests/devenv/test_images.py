"""Local images: keyed by their inputs, valid OCI archives that skopeo and umoci read.

Needs no root and no server: gcc, busybox-static, skopeo and umoci (Debian packages the
set-up installs). The containerd import is in test_images_containerd.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.devenv import images
from sandbox.devenv.oci import oci_arch
from sandbox.devenv.toolchain import TOOLS
from sandbox.errors import ConfigurationError


def _need(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt packages of the data plane)")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "images"
    monkeypatch.setenv("REGSANDBOX_IMAGE_DIR", str(directory))
    return directory


@pytest.fixture
def checkout(repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of what the regsandbox image is made of, with its own fake opa binary."""
    copy = tmp_path / "checkout"
    for part in ("pyproject.toml", "README.md", "LICENSE"):
        copy.mkdir(exist_ok=True)
        shutil.copy2(repo_root / part, copy / part)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("sandbox", "operators", "audit", "policies"):
        shutil.copytree(repo_root / part, copy / part, ignore=ignore)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / TOOLS["opa"].filename).write_bytes(b"opa build one")
    monkeypatch.setenv("REGSANDBOX_BIN_DIR", str(bin_dir))
    return copy


def test_regsandbox_key_changes_with_each_input_and_only_then(checkout: Path) -> None:
    key = images.content_key("regsandbox", checkout)
    assert images.content_key("regsandbox", checkout) == key

    # Byte-compiled files and caches are not inputs.
    cached = checkout / "sandbox" / "__pycache__"
    cached.mkdir(exist_ok=True)
    (cached / "errors.cpython-311.pyc").write_bytes(b"\x00")
    assert images.content_key("regsandbox", checkout) == key

    source = checkout / "sandbox" / "errors.py"
    original = source.read_bytes()
    source.write_bytes(original + b"\n# changed\n")
    changed = images.content_key("regsandbox", checkout)
    assert changed != key
    source.write_bytes(original)
    assert images.content_key("regsandbox", checkout) == key

    policy = next((checkout / "policies").rglob("*.rego"))
    policy.write_text(policy.read_text() + "\n")
    with_policy = images.content_key("regsandbox", checkout)
    assert with_policy not in (key, changed)

    opa = Path(os.environ["REGSANDBOX_BIN_DIR"]) / TOOLS["opa"].filename
    opa.write_bytes(b"opa build two")
    with_opa = images.content_key("regsandbox", checkout)
    assert with_opa not in (key, changed, with_policy)

    # A new version is a new tag and a new image.
    pyproject = checkout / "pyproject.toml"
    text = pyproject.read_text()
    version = images.image_ref("regsandbox", checkout).rsplit(":", 1)[1]
    pyproject.write_text(text.replace(f'version = "{version}"', 'version = "9.9.9"', 1))
    assert images.image_ref("regsandbox", checkout) == "localhost/regsandbox:9.9.9"
    assert images.content_key("regsandbox", checkout) not in (key, changed, with_policy, with_opa)


def test_an_unknown_image_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown image 'nginx'; known: pause, busybox"):
        images.content_key("nginx")


def _layout(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def test_pause_and_busybox_are_oci_archives_with_entrypoint_and_user(
    cache: Path, tmp_path: Path
) -> None:
    _need("gcc", "busybox", "skopeo", "umoci")
    pause = images.build_image("pause")
    busybox = images.build_image("busybox")
    assert pause.parent == busybox.parent == cache

    config = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", f"oci-archive:{pause}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["User"] == "65535:65535"
    assert (config["os"], config["architecture"]) == ("linux", oci_arch())

    inspect = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"oci-archive:{busybox}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert inspect["Layers"], inspect
    tag = images.image_ref("busybox").rsplit(":", 1)[1]
    layout = _layout(busybox, tmp_path / "layout")
    index = json.loads((layout / "index.json").read_text())
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == images.image_ref("busybox")
    # umoci reads the layout and unpacks it unprivileged: the applets and nobody are there.
    stat = subprocess.run(
        ["umoci", "stat", "--image", f"{layout}:{tag}", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(stat.stdout)["history"]
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle)],
        capture_output=True,
        check=True,
    )
    rootfs = bundle / "rootfs"
    assert (rootfs / "bin/sh").readlink() == Path("busybox")
    assert (rootfs / "bin/id").readlink() == Path("busybox")
    assert "nobody:x:65534:65534:" in (rootfs / "etc/passwd").read_text()
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/sh"]


def test_second_build_is_a_cache_hit_and_a_forced_rebuild_is_identical(cache: Path) -> None:
    _need("busybox")
    messages: list[str] = []
    first = images.build_image("busybox", progress=messages.append)
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    messages.clear()
    again = images.build_image("busybox", progress=messages.append)
    assert again == first
    assert messages == [f"{images.image_ref('busybox')}: cached at {first}"]
    rebuilt = images.build_image("busybox", force=True, progress=messages.append)
    assert rebuilt == first
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest() == digest


def test_cli_lists_the_images_and_their_cache_state(cache: Path) -> None:
    _need("gcc")
    runner = CliRunner()
    before = runner.invoke(app, ["dev", "images", "--name", "pause", "-o", "json"])
    assert before.exit_code == 0, before.output
    [row] = json.loads(before.stdout)
    assert (row["name"], row["ref"], row["cached"]) == ("pause", "localhost/pause:3.10", False)
    built = runner.invoke(app, ["dev", "images", "--build", "--name", "pause", "-o", "json"])
    assert built.exit_code == 0, built.output
    [row] = json.loads(built.stdout)
    assert row["cached"] is True
    assert Path(row["archive"]).is_file()
    unknown = runner.invoke(app, ["dev", "images", "--name", "nginx"])
    assert unknown.exit_code == 2


def test_dependencies_are_pinned_to_what_this_environment_runs(repo_root: Path) -> None:
    pins = dict(pin.split("==") for pin in images._runtime_pins(repo_root))
    with (repo_root / "pyproject.toml").open("rb") as handle:
        direct = tomllib.load(handle)["project"]["dependencies"]
    for requirement in direct:
        name = canonicalize_name(Requirement(requirement).name)
        assert pins[name] == metadata.version(name), name
    # The closure, not just the direct ones: boto3's botocore, pydantic's core.
    assert pins["botocore"] == metadata.version("botocore")
    assert pins["pydantic-core"] == metadata.version("pydantic-core")
    # Development tools are not in the image.
    assert not {"pytest", "mypy", "ruff", "moto"} & set(pins)


def test_import_into_a_missing_socket_says_to_start_the_node(cache: Path, tmp_path: Path) -> None:
    _need("gcc", "ctr")
    archive = images.build_image("pause")
    (tmp_path / "not-a-socket").write_text("")
    for socket in (tmp_path / "absent.sock", tmp_path / "not-a-socket"):
        with pytest.raises(images.ImageBuildError, match=r"no containerd socket at .*dev up"):
            images.import_archive(socket, archive)


def test_cli_lists_an_image_it_cannot_build_with_the_reason(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGSANDBOX_BIN_DIR", str(tmp_path / "no-tools"))
    listed = CliRunner().invoke(
        app, ["dev", "images", "--name", "opa", "--name", "pause", "-o", "json"]
    )
    assert listed.exit_code == 0, listed.output
    opa, pause = json.loads(listed.stdout)
    assert opa["cached"] is False
    assert "make tools" in opa["description"]
    assert pause["ref"] == "localhost/pause:3.10"
