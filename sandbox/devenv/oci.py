"""OCI image layouts written by hand: deterministic layers and ``oci-archive`` files.

An image here is an OCI image-layout archive: ``oci-layout``, ``index.json`` and
``blobs/sha256/…`` in one tar, with uncompressed layers. skopeo, umoci and
``ctr images import`` read it. Every timestamp is fixed and every file is owned by root,
so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import stat
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "EPOCH",
    "LayerWriter",
    "archive_ref",
    "canonical_json",
    "oci_arch",
    "sha256_file",
    "write_archive",
]

EPOCH = 0
"""Timestamp of every file and of the image configs: inputs, not build times, make an image."""


def oci_arch() -> str:
    """This machine's architecture in OCI terms (``amd64``, ``arm64``)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LayerWriter:
    """A deterministic layer tar: fixed times, root ownership unless told otherwise."""

    def __init__(self, path: Path) -> None:
        self._tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self._dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = EPOCH
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def directory(self, name: str, mode: int = 0o755) -> None:
        """Add directory ``name`` (and its parents) once."""
        parts = name.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if sub and sub not in self._dirs:
                self._dirs.add(sub)
                self._tar.addfile(
                    self._info(sub, tarfile.DIRTYPE, mode if depth == len(parts) else 0o755)
                )

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file with ``data``."""
        if "/" in name:
            self.directory(name.rsplit("/", 1)[0])
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def copy(self, name: str, source: Path, mode: int | None = None) -> None:
        """Add the file at ``source`` (followed if a link) as ``name``."""
        if "/" in name:
            self.directory(name.rsplit("/", 1)[0])
        info = self._info(name, tarfile.REGTYPE, mode if mode is not None else 0o755)
        info.size = source.stat().st_size
        with source.open("rb") as handle:
            self._tar.addfile(info, handle)

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link ``name`` -> ``target``."""
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)

    def tree(self, name: str, source: Path) -> None:
        """Add the directory ``source`` recursively as ``name``, keeping modes and links."""
        self.directory(name, stat.S_IMODE(source.stat().st_mode))
        for path in sorted(source.rglob("*")):
            rel = f"{name}/{path.relative_to(source).as_posix()}"
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                self.symlink(rel, str(path.readlink()))
            elif stat.S_ISDIR(st.st_mode):
                self._dirs.add(rel)
                self._tar.addfile(self._info(rel, tarfile.DIRTYPE, stat.S_IMODE(st.st_mode)))
            elif stat.S_ISREG(st.st_mode):
                self.copy(rel, path, stat.S_IMODE(st.st_mode))

    def close(self) -> None:
        """Finish the tar."""
        self._tar.close()


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_archive(
    out: Path, ref: str, layers: Sequence[Path], config: dict[str, Any], history: str
) -> None:
    """Write an OCI image-layout archive of ``layers`` (uncompressed tars) and ``config``."""
    repository, tag = ref.rsplit(":", 1)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        layout = Path(scratch)
        (layout / "blobs" / "sha256").mkdir(parents=True)
        layer_descs: list[dict[str, Any]] = []
        diff_ids: list[str] = []
        for layer in layers:
            digest = sha256_file(layer)
            diff_ids.append(f"sha256:{digest}")
            layer_descs.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{digest}",
                    "size": layer.stat().st_size,
                }
            )
        image_config = {
            "created": "1970-01-01T00:00:00Z",
            "architecture": oci_arch(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": history}],
        }
        config_desc = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(layout, canonical_json(image_config)),
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": layer_descs,
        }
        manifest_desc = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **_blob(layout, canonical_json(manifest)),
            "platform": {"architecture": oci_arch(), "os": "linux"},
            "annotations": {
                # skopeo and umoci name the image by its tag; containerd by its full name.
                "org.opencontainers.image.ref.name": tag,
                "io.containerd.image.name": f"{repository}:{tag}",
            },
        }
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [manifest_desc],
        }
        (layout / "index.json").write_bytes(canonical_json(index))
        (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        partial = out.with_name(f".{out.name}.partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
            for member in ("oci-layout", "index.json"):
                archive.add(layout / member, member, filter=_normalise)
            archive.add(layout / "blobs", "blobs", recursive=False, filter=_normalise)
            archive.add(layout / "blobs/sha256", "blobs/sha256", recursive=False, filter=_normalise)
            for blob in sorted((layout / "blobs" / "sha256").iterdir()):
                archive.add(blob, f"blobs/sha256/{blob.name}", filter=_normalise)
            for layer, desc in zip(layers, layer_descs, strict=True):
                name = f"blobs/sha256/{desc['digest'].removeprefix('sha256:')}"
                archive.add(layer, name, filter=_normalise)
        partial.replace(out)


def canonical_json(document: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys: the bytes of a config, manifest or index."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def archive_ref(archive: Path) -> str:
    """The reference an archive built here is imported as (from its ``index.json``)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{archive} is not an OCI archive (no index.json)")
        index = json.load(member)
    return str(index["manifests"][0]["annotations"]["io.containerd.image.name"])
