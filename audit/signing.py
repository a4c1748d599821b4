"""Signing keys on disk.

A signer key file holds one line, ``PRIVATE+KEY+<name>+<key ID>+<base64>`` (the format of
golang.org/x/mod/sumdb/note), readable by its owner only. A verifier key file holds the
public ``<name>+<key ID>+<base64>`` line. In Kubernetes, pass a Secret's value to
:meth:`audit.note.Signer.from_private_key` instead of using a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from audit.errors import MalformedError, StorageError
from audit.note import Signer, Verifier

__all__ = ["generate_key_file", "load_signer", "load_verifier", "write_vkey_file"]


def generate_key_file(path: Path, name: str) -> Signer:
    """Create a new Ed25519 key for ``name`` in a new file at ``path`` (mode 0600)."""
    signer = Signer.generate(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise StorageError(f"key file {path} already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "w") as f:
        f.write(signer.private_key + "\n")
        f.flush()
        os.fsync(f.fileno())
    return signer


def load_signer(path: Path) -> Signer:
    """Read a signer key file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise StorageError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        return Signer.from_private_key(text)
    except MalformedError as exc:
        raise MalformedError(f"key file {path}: {exc}") from exc


def load_verifier(path: Path) -> Verifier:
    """Read a verifier key file (one ``name+keyid+base64`` line)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise StorageError(f"cannot read verifier key {path}: {exc.strerror}") from exc
    if not text.endswith("\n") or text.count("\n") != 1:
        raise MalformedError(f"verifier key file {path} must hold exactly one line")
    try:
        return Verifier.from_vkey(text[:-1])
    except MalformedError as exc:
        raise MalformedError(f"verifier key file {path}: {exc}") from exc


def write_vkey_file(path: Path, verifier: Verifier) -> None:
    """Write a verifier key file."""
    Path(path).write_text(verifier.vkey + "\n")
