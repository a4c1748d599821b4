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

__all__ = [
    "generate_key_file",
    "load_signer",
    "load_verifier",
    "read_key_text",
    "write_vkey_file",
]


def read_key_text(path: Path, what: str) -> str:
    """The text of a key or token file, or a clear error naming the file.

    Raises :class:`~audit.errors.StorageError` if it cannot be read and
    :class:`~audit.errors.MalformedError` if it is not UTF-8 text (a binary or DER key, a
    file in another encoding); the contents are never echoed.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is not); expected a "
            "one-line key in the C2SP note format, e.g. from `sandboxctl audit init`"
        ) from None


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
    text = read_key_text(path, "key file")
    try:
        return Signer.from_private_key(text)
    except MalformedError as exc:
        raise MalformedError(f"key file {path}: {exc}") from exc


def load_verifier(path: Path) -> Verifier:
    """Read a verifier key file (one ``name+keyid+base64`` line)."""
    text = read_key_text(path, "verifier key")
    if not text.endswith("\n") or text.count("\n") != 1:
        raise MalformedError(f"verifier key file {path} must hold exactly one line")
    try:
        return Verifier.from_vkey(text[:-1])
    except MalformedError as exc:
        raise MalformedError(f"verifier key file {path}: {exc}") from exc


def write_vkey_file(path: Path, verifier: Verifier) -> None:
    """Write a verifier key file."""
    Path(path).write_text(verifier.vkey + "\n")
