"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and their key strings.

Pure functions, no I/O. A note is UTF-8 text ending in a newline, a blank line, and one
or more signature lines ``— <key name> base64(key ID || signature)``. Keys are written the
way golang.org/x/mod/sumdb/note writes them, so keys and notes work with Go tools:

- verifier key (vkey): ``<name>+<key ID as 8 hex digits>+base64(0x01 || public key)``
- signer key: ``PRIVATE+KEY+<name>+<key ID>+base64(0x01 || 32-byte seed)``

The key ID is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``, big-endian.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.errors import MalformedError, VerificationError

__all__ = [
    "ED25519",
    "MAX_SIGNATURES",
    "Note",
    "NoteSignature",
    "PrivateKey",
    "Signer",
    "Verifier",
    "b64decode",
    "b64encode",
    "check_key_name",
    "key_id",
    "open_note",
    "parse_key_fields",
    "parse_private_key",
    "sign_note",
]

ED25519 = 0x01
"""Signature type byte of Ed25519 in the signed-note registry."""

MAX_SIGNATURES = 64
"""Most signature lines accepted in one note (the spec asks for at least 16)."""

_DASH = "\u2014 "
_PRIVATE_PREFIX = "PRIVATE+KEY+"


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 section 4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Decode standard base64, refusing anything but the one canonical encoding."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedError(f"{what} is not valid base64") from exc
    if b64encode(data) != text:
        raise MalformedError(f"{what} is not canonical base64")
    return data


def check_key_name(name: str) -> None:
    """Refuse key names the spec forbids: empty, with Unicode spaces or ``+``."""
    if not name or "+" in name or any(c.isspace() for c in name):
        raise MalformedError(f"invalid key name {name!r}: must be non-empty, no spaces, no '+'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise MalformedError(f"invalid key name {name!r}: control characters")


def key_id(name: str, public_key: bytes) -> int:
    """Ed25519 key ID of ``name`` and the 32-byte ``public_key``."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def parse_key_fields(
    text: str, what: str, key_type: int = ED25519, kind: str = "an Ed25519 key (type 0x01)"
) -> tuple[str, int, bytes]:
    """Split ``name+keyid+base64(type || key)`` into name, key ID and the 32 key bytes.

    ``key_type`` is the expected first byte (0x01 for note keys, 0x04 for witness
    cosignature keys); anything else is refused naming ``kind``.
    """
    parts = text.split("+", 2)  # base64 may contain "+"; names and key IDs cannot
    if len(parts) != 3:
        raise MalformedError(f"{what} must look like name+keyid+base64key")
    name, hex_id, key64 = parts
    check_key_name(name)
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise MalformedError(f"{what} key ID {hex_id!r} is not 8 lowercase hex digits")
    key = b64decode(key64, f"{what} key")
    if len(key) != 33 or key[0] != key_type:
        raise MalformedError(f"{what} is not {kind}, 32 bytes")
    return name, int(hex_id, 16), key[1:]


@dataclass(frozen=True)
class Verifier:
    """A public key that checks note signatures by one key name and key ID."""

    name: str
    """Key name, usually the log origin."""
    public_key: bytes
    """32-byte Ed25519 public key."""

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public_key) != 32:
            raise MalformedError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        """The key ID derived from name and key."""
        return key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """The verifier key string ``name+keyid+base64``."""
        return f"{self.name}+{self.key_id:08x}+{b64encode(bytes([ED25519]) + self.public_key)}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse a verifier key string; the key ID must match name and key."""
        name, kid, public = parse_key_fields(vkey.strip(), "verifier key")
        verifier = cls(name, public)
        if verifier.key_id != kid:
            raise MalformedError(f"verifier key {name}: key ID {kid:08x} does not match the key")
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def parse_private_key(
    text: str, what: str, key_type: int = ED25519, kind: str = "an Ed25519 key (type 0x01)"
) -> tuple[str, int, bytes]:
    """Split ``PRIVATE+KEY+name+keyid+base64(type || seed)`` into name, key ID and seed."""
    text = text.strip()
    if not text.startswith(_PRIVATE_PREFIX):
        raise MalformedError(f"{what} must start with PRIVATE+KEY+")
    return parse_key_fields(text[len(_PRIVATE_PREFIX) :], what, key_type, kind)


class _PublicKey(Protocol):
    @property
    def key_id(self) -> int: ...

    @property
    def vkey(self) -> str: ...


class PrivateKey:
    """An Ed25519 private key with its key name, in the Go ``PRIVATE+KEY+...`` text form.

    Shared by note signers (type 0x01, :class:`Signer`) and witness cosigners (type
    0x04, :class:`audit.witness.Cosigner`); a subclass sets the type byte, how its keys
    are named in errors, and :attr:`verifier` (the matching public key).
    """

    key_type: ClassVar[int] = ED25519
    """Signature type byte of the key's text form and key ID."""
    what: ClassVar[str] = "signer key"
    """How errors name this kind of key."""
    kind: ClassVar[str] = "an Ed25519 key (type 0x01)"
    """What a key of the wrong type is told it should be."""
    verifier: _PublicKey
    """The matching public key (set by the subclass)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        check_key_name(name)
        self.name = name
        """Key name (a log origin, or a witness's name)."""
        self._key = private_key

    def _public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.verifier.vkey!r})"

    @classmethod
    def generate(cls, name: str) -> Self:
        """A new random key for ``name``."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key(cls, text: str) -> Self:
        """Parse ``PRIVATE+KEY+name+keyid+base64(type || seed)`` (the Go note format)."""
        name, kid, seed = parse_private_key(text, cls.what, cls.key_type, cls.kind)
        key = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if key.key_id != kid:
            raise MalformedError(f"{cls.what} {name}: key ID {kid:08x} does not match the key")
        return key

    @property
    def key_id(self) -> int:
        """The key ID."""
        return self.verifier.key_id

    @property
    def private_key(self) -> str:
        """The key as ``PRIVATE+KEY+name+keyid+base64`` text. Keep it secret."""
        blob = b64encode(bytes([self.key_type]) + self._key.private_bytes_raw())
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id:08x}+{blob}"


class Signer(PrivateKey):
    """An Ed25519 private key with its key name; signs notes."""

    verifier: Verifier

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        super().__init__(name, private_key)
        self.verifier = Verifier(name, self._public_bytes())
        """The matching verifier."""

    def sign(self, message: bytes) -> NoteSignature:
        """Sign note text, giving a signature line's content."""
        return NoteSignature(self.name, self.key_id, self._key.sign(message))


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note."""

    name: str
    """Key name."""
    key_id: int
    """32-bit key ID."""
    signature: bytes
    """Signature bytes (without the key ID)."""

    def line(self) -> str:
        """The signature line, with its final newline."""
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_DASH}{self.name} {b64encode(blob)}\n"


def _check_text(text: str, what: str) -> None:
    for c in text:
        if c < " " and c != "\n":
            raise MalformedError(f"{what} contains control character U+{ord(c):04X}")


@dataclass(frozen=True)
class Note:
    """A signed note: text plus signature lines (not yet verified)."""

    text: str
    """The signed text, ending with a newline."""
    signatures: tuple[NoteSignature, ...]
    """Signature lines in order."""

    def to_bytes(self) -> bytes:
        """The note as transmitted: text, blank line, signature lines."""
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()

    @classmethod
    def parse(cls, data: bytes) -> Note:
        """Parse a signed note without checking any signature."""
        try:
            whole = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedError("note is not valid UTF-8") from exc
        _check_text(whole, "note")
        if not whole.endswith("\n"):
            raise MalformedError("note does not end with a newline")
        split = whole.rfind("\n\n")
        if split < 0:
            raise MalformedError("note has no blank line before its signatures")
        text, block = whole[: split + 1], whole[split + 2 :]
        lines = block.split("\n")[:-1]  # the block ends with "\n"
        if not lines:
            raise MalformedError("note has no signatures")
        if len(lines) > MAX_SIGNATURES:
            raise MalformedError(f"note has more than {MAX_SIGNATURES} signatures")
        sigs = []
        for line in lines:
            if not line.startswith(_DASH):
                raise MalformedError("signature line does not start with an em dash and space")
            name, sep, blob64 = line[len(_DASH) :].partition(" ")
            if not sep:
                raise MalformedError("signature line has no signature")
            check_key_name(name)
            blob = b64decode(blob64, "signature")
            if len(blob) < 5:
                raise MalformedError("signature is too short")
            sigs.append(NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:]))
        return cls(text, tuple(sigs))


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """Sign ``text`` with every signer and return the signed note."""
    if not signers:
        raise ValueError("at least one signer is needed")
    if not text.endswith("\n"):
        raise MalformedError("note text must end with a newline")
    _check_text(text, "note text")
    message = text.encode()
    return Note(text, tuple(s.sign(message) for s in signers)).to_bytes()


def open_note(data: bytes, verifiers: Iterable[Verifier]) -> tuple[Note, tuple[Verifier, ...]]:
    """Parse a signed note and check it against trusted keys.

    Signatures from unknown keys are ignored; a signature from a known key that fails
    rejects the whole note; at least one known key must have signed. Returns the note and
    the verifiers whose signatures checked out.
    """
    note = Note.parse(data)
    known = {(v.name, v.key_id): v for v in verifiers}
    message = note.text.encode()
    verified: list[Verifier] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(message, sig.signature):
            raise VerificationError(f"bad signature by {sig.name}+{sig.key_id:08x}")
        if verifier not in verified:
            verified.append(verifier)
    if not verified:
        raise VerificationError("note is not signed by any trusted key")
    return note, tuple(verified)
