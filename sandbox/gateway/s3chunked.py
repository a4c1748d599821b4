"""Request bodies as AWS SDKs send them: aws-chunked encoding, chunk signatures, checksums.

An S3 client may send a ``PutObject``/``UploadPart`` body in three ways; the
:class:`BodyCheck` of a request decodes and verifies whichever it is, streaming, so the
gateway's writers see (and hash for the audit log) the decoded object only:

- plain, its SHA-256 signed in ``X-Amz-Content-SHA256`` (or ``UNSIGNED-PAYLOAD``);
- ``aws-chunked`` with ``X-Amz-Content-SHA256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD``
  (optionally ``…-TRAILER``): every chunk ``<hex size>;chunk-signature=<sig>\\r\\n<data>\\r\\n``
  carries a signature over the previous one, seeded by the request's signature, so no
  chunk can be changed, dropped, reordered or added; the trailer, if any, is signed too
  (``x-amz-trailer-signature``);
- ``aws-chunked`` with ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (boto3's and s3fs's default
  over TLS): chunks ``<hex size>\\r\\n<data>\\r\\n`` and a trailer
  ``x-amz-checksum-<algorithm>:<base64>`` naming the whole object's checksum.

A flexible checksum (``x-amz-checksum-crc32``, ``-crc32c``, ``-crc64nvme``, ``-sha1``,
``-sha256``) is verified whether it comes as a header or as the trailer; another one is
accepted only as a header on a body whose signed SHA-256 is verified anyway, and
otherwise refused (``NotImplemented``), never passed unchecked. A body that fails a check
raises when its end is reached, before the writer commits anything: a bad chunk
signature is ``SignatureDoesNotMatch`` (403), a checksum that does not match is
``BadDigest`` (400), broken framing or a length other than
``X-Amz-Decoded-Content-Length`` is ``IncompleteBody`` (400), as S3 answers them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import crc32c

from sandbox.gateway.sigv4 import (
    UNSIGNED_PAYLOAD,
    BadRequest,
    SeedSignature,
    SignatureRefused,
    Unsupported,
)

__all__ = [
    "SIGNED_CHUNKS",
    "SIGNED_CHUNKS_TRAILER",
    "UNSIGNED_CHUNKS_TRAILER",
    "BodyCheck",
    "body_check",
]

SIGNED_CHUNKS = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
"""Chunks signed in a chain seeded by the request's signature."""
SIGNED_CHUNKS_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
"""Signed chunks, then a signed trailer with the object's checksum."""
UNSIGNED_CHUNKS_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
"""Unsigned chunks, then a trailer with the object's checksum."""

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK_HEADER = re.compile(rb"^([0-9a-fA-F]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?$")
_MAX_LINE = 4096
"""Longest chunk header or trailer line accepted."""
_MAX_TRAILER_LINES = 8


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc:
    """A CRC as a hashlib-like object (big-endian digest, as S3 encodes it)."""

    def __init__(self, step: Callable[[bytes, int], int]) -> None:
        self._step = step
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = self._step(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def _crc64nvme_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC64NVME_TABLE = _crc64nvme_table()
_ONES64 = (1 << 64) - 1


class _Crc64Nvme:
    """CRC-64/NVME (reflected polynomial ``0x9A6C9329AC4BC9B5``, init and xor-out all
    ones), which the AWS SDK for C++ (pyarrow's S3FileSystem) sends by default. Pure
    Python, byte by byte: about 10 MB/s of one core, so large uploads should use CRC32
    (boto3's and s3fs's default)."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes, /) -> None:
        table, crc = _CRC64NVME_TABLE, self._value ^ _ONES64
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._value = crc ^ _ONES64

    def digest(self) -> bytes:
        return self._value.to_bytes(8, "big")


_ALGORITHMS: dict[str, Callable[[], _Digest]] = {
    "crc32": lambda: _Crc(zlib.crc32),
    "crc32c": lambda: _Crc(crc32c.crc32c),
    "sha1": lambda: hashlib.sha1(usedforsecurity=False),
    "sha256": hashlib.sha256,
    "crc64nvme": _Crc64Nvme,
}
"""Checksums the gateway verifies; others are refused as NotImplemented."""


def _checksum_header(name: str, *, covered: bool = False) -> str | None:
    """The algorithm of a ``x-amz-checksum-<algorithm>`` name; None if not one, or if
    it is one the gateway cannot compute on a body whose signed SHA-256 it verifies
    anyway (``covered``: Arrow's SDK sends CRC64NVME headers over plain HTTP)."""
    prefix = "x-amz-checksum-"
    if not name.startswith(prefix) or name == "x-amz-checksum-type":
        return None
    algorithm = name[len(prefix) :]
    if algorithm not in _ALGORITHMS:
        if covered:
            return None
        raise Unsupported(
            f"the checksum algorithm {algorithm!r} is not offered; use CRC32, CRC32C, "
            "SHA1 or SHA256"
        )
    return algorithm


@dataclass
class _Checksum:
    """A flexible checksum the client claimed, checked against the decoded object."""

    algorithm: str
    digest: _Digest
    claimed: str | None = None

    def verify(self) -> None:
        expected = base64.b64encode(self.digest.digest()).decode()
        if self.claimed is None or not hmac.compare_digest(expected, self.claimed):
            raise BadRequest(
                "BadDigest",
                f"the {self.algorithm.upper()} you specified did not match the calculated checksum",
            )


@dataclass
class BodyCheck:
    """Decodes and verifies one request body, chunk by chunk (see the module)."""

    claimed_sha256: str
    """``X-Amz-Content-SHA256`` as signed."""
    chunked: bool
    """Whether the body is aws-chunked."""
    seed: SeedSignature | None
    """The request's verified signature (signed chunks chain from it)."""
    decoded_length: int | None
    """``X-Amz-Decoded-Content-Length`` of an aws-chunked body."""
    trailer: str | None = None
    """The trailer the client announced (``x-amz-trailer``), lower-case."""
    checksum: _Checksum | None = None
    """The flexible checksum to verify, from a header or the trailer."""
    _sha256: _Digest | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _state: str = "header"
    _remaining: int = 0
    _chunk_signature: str = ""
    _chunk_hash: _Digest | None = None
    _previous: str = ""
    _decoded: int = 0
    _trailer_lines: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.chunked and self.claimed_sha256 != UNSIGNED_PAYLOAD:
            self._sha256 = hashlib.sha256()
        if self.seed is not None:
            self._previous = self.seed.signature

    @property
    def signed_chunks(self) -> bool:
        """Whether every chunk carries a signature."""
        return self.claimed_sha256 in (SIGNED_CHUNKS, SIGNED_CHUNKS_TRAILER)

    @property
    def expects_trailer(self) -> bool:
        """Whether a trailer follows the last chunk."""
        return self.claimed_sha256 in (SIGNED_CHUNKS_TRAILER, UNSIGNED_CHUNKS_TRAILER)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes in ``data`` (a piece of the body as received)."""
        if not self.chunked:
            if data:
                self._count(data)
                yield data
            return
        self._buffer += data
        while True:
            if self._state == "data":
                if not self._buffer:
                    return
                piece = bytes(self._buffer[: self._remaining])
                del self._buffer[: len(piece)]
                self._remaining -= len(piece)
                if self._chunk_hash is not None:
                    self._chunk_hash.update(piece)
                self._count(piece)
                yield piece
                if self._remaining == 0:
                    self._state = "data-end"
                continue
            line = self._line()
            if line is None:
                return
            self._on_line(line)

    def finish(self) -> None:
        """Check the whole body once received: framing, length, signatures, checksums.

        Raises:
            BadRequest: ``IncompleteBody``, ``XAmzContentSHA256Mismatch``, ``BadDigest``.
            SignatureRefused: ``SignatureDoesNotMatch`` (a trailer signature).
        """
        if self.chunked:
            if self._state != "done" or self._buffer:
                raise BadRequest("IncompleteBody", "the aws-chunked body ended early")
            if self.decoded_length is not None and self._decoded != self.decoded_length:
                raise BadRequest(
                    "IncompleteBody",
                    "the decoded body is not x-amz-decoded-content-length bytes long",
                )
        elif self._sha256 is not None and not hmac.compare_digest(
            self._sha256.digest().hex(), self.claimed_sha256
        ):
            raise BadRequest(
                "XAmzContentSHA256Mismatch",
                "the body's SHA-256 is not the x-amz-content-sha256 that was signed",
            )
        if self.checksum is not None:
            self.checksum.verify()

    # -- parsing ------------------------------------------------------------------------

    def _count(self, data: bytes) -> None:
        self._decoded += len(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self.checksum is not None:
            self.checksum.digest.update(data)

    def _line(self) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_LINE:
                raise BadRequest("IncompleteBody", "an aws-chunked line is too long")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _on_line(self, line: bytes) -> None:
        if self._state == "data-end":
            if line:
                raise BadRequest("IncompleteBody", "a chunk is longer than its size says")
            self._end_chunk()
            self._state = "header"
        elif self._state == "header":
            self._chunk_header(line)
        elif self._state == "trailer":
            self._trailer_line(line)
        elif self._state == "final":
            if line:
                raise BadRequest("IncompleteBody", "bytes after the last chunk")
            self._state = "done"
        else:  # done
            raise BadRequest("IncompleteBody", "bytes after the end of the aws-chunked body")

    def _chunk_header(self, line: bytes) -> None:
        match = _CHUNK_HEADER.match(line)
        if not match:
            raise BadRequest("IncompleteBody", "malformed aws-chunked chunk header")
        size, signature = int(match.group(1), 16), match.group(2)
        if self.signed_chunks != (signature is not None):
            raise SignatureRefused(
                "SignatureDoesNotMatch",
                "a chunk's signature is missing"
                if self.signed_chunks
                else "chunk signatures in a body declared unsigned",
            )
        self._chunk_signature = signature.decode() if signature else ""
        self._chunk_hash = hashlib.sha256() if self.signed_chunks else None
        if size:
            self._remaining = size
            self._state = "data"
            return
        self._end_chunk()  # the final, empty chunk
        self._state = "trailer" if self.expects_trailer else "final"

    def _end_chunk(self) -> None:
        """Verify the chunk just read against the chain of signatures."""
        if self._chunk_hash is None:
            return
        if self.seed is None:  # a signed body always has a verified request
            raise SignatureRefused("SignatureDoesNotMatch", "no seed signature")
        expected = self.seed.sign(
            "\n".join(
                (
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    self.seed.amz_date,
                    self.seed.scope,
                    self._previous,
                    _EMPTY_SHA256,
                    self._chunk_hash.digest().hex(),
                )
            )
        )
        if not hmac.compare_digest(expected.encode(), self._chunk_signature.encode()):
            raise SignatureRefused(
                "SignatureDoesNotMatch",
                "a chunk signature we calculated does not match the signature you provided",
            )
        self._previous = expected
        self._chunk_hash = None

    def _trailer_line(self, line: bytes) -> None:
        if line:
            if len(self._trailer_lines) >= _MAX_TRAILER_LINES:
                raise BadRequest("IncompleteBody", "too many trailer lines")
            self._trailer_lines.append(line)
            return
        self._end_trailer()
        self._state = "done"

    def _end_trailer(self) -> None:
        fields: dict[str, str] = {}
        for raw in self._trailer_lines:
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or name.strip().lower() in fields:
                raise BadRequest("IncompleteBody", "malformed trailer")
            fields[name.strip().lower()] = value.strip()
        signature = fields.pop("x-amz-trailer-signature", None)
        if self.signed_chunks:
            self._verify_trailer(signature)
        elif signature is not None:
            raise BadRequest("IncompleteBody", "a trailer signature in an unsigned body")
        if set(fields) != ({self.trailer} if self.trailer else set()):
            raise BadRequest("IncompleteBody", "the trailer is not the one x-amz-trailer named")
        if self.trailer is not None and self.checksum is not None:
            self.checksum.claimed = fields[self.trailer]

    def _verify_trailer(self, signature: str | None) -> None:
        if self.seed is None or signature is None or not _SHA256_HEX.match(signature):
            raise SignatureRefused("SignatureDoesNotMatch", "the trailer is not signed")
        canonical = "".join(
            f"{name.strip().lower()}:{value.strip()}\n"
            for name, _, value in (
                line.decode("latin-1").partition(":") for line in self._trailer_lines
            )
            if name.strip().lower() != "x-amz-trailer-signature"
        ).encode("latin-1")
        expected = self.seed.sign(
            "\n".join(
                (
                    "AWS4-HMAC-SHA256-TRAILER",
                    self.seed.amz_date,
                    self.seed.scope,
                    self._previous,
                    hashlib.sha256(canonical).hexdigest(),
                )
            )
        )
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureRefused(
                "SignatureDoesNotMatch",
                "the trailer signature we calculated does not match the one you provided",
            )


def body_check(headers: dict[str, str], seed: SeedSignature | None) -> BodyCheck:
    """The check of the body of a request with these (lower-case) headers.

    Raises:
        BadRequest: an ``X-Amz-Content-SHA256`` that names no known payload, an
            aws-chunked body without ``X-Amz-Decoded-Content-Length``, a trailer that is
            not one checksum.
        Unsupported: SigV4a (ECDSA) chunk signatures, or a checksum algorithm not offered.
    """
    claimed = headers.get("x-amz-content-sha256", "")
    check = BodyCheck(claimed, claimed.startswith("STREAMING-"), seed, _decoded_length(headers))
    covered = _SHA256_HEX.match(claimed) is not None
    for name, value in headers.items():
        algorithm = _checksum_header(name, covered=covered)
        if algorithm is not None:
            if check.checksum is not None:
                raise BadRequest("InvalidRequest", "more than one checksum header")
            check.checksum = _Checksum(algorithm, _ALGORITHMS[algorithm](), value.strip())
    _announced_trailer(check, headers.get("x-amz-trailer", "").strip().lower() or None)
    return check


def _decoded_length(headers: dict[str, str]) -> int | None:
    """``X-Amz-Decoded-Content-Length`` of an aws-chunked body; None for a plain one."""
    claimed = headers.get("x-amz-content-sha256", "")
    encodings = [e.strip().lower() for e in headers.get("content-encoding", "").split(",")]
    if not claimed.startswith("STREAMING-"):
        if claimed != UNSIGNED_PAYLOAD and not _SHA256_HEX.match(claimed):
            raise BadRequest("InvalidArgument", "x-amz-content-sha256 must be a hex SHA-256")
        if "aws-chunked" in encodings:
            raise BadRequest("InvalidArgument", "aws-chunked needs a STREAMING- payload hash")
        return None
    if claimed not in (SIGNED_CHUNKS, SIGNED_CHUNKS_TRAILER, UNSIGNED_CHUNKS_TRAILER):
        raise Unsupported(f"the payload {claimed} is not offered (SigV4a is not)")
    value = headers.get("x-amz-decoded-content-length", "")
    if not value.isdigit() or len(value) > 19:
        raise BadRequest(
            "MissingContentLength", "aws-chunked bodies need x-amz-decoded-content-length"
        )
    return int(value)


def _announced_trailer(check: BodyCheck, trailer: str | None) -> None:
    """Take the trailer ``x-amz-trailer`` announces (the object's checksum)."""
    if check.signed_chunks and check.seed is None:
        raise SignatureRefused("SignatureDoesNotMatch", "signed chunks need a signed request")
    if trailer is None:
        if check.expects_trailer:
            raise BadRequest("InvalidRequest", "a STREAMING-…-TRAILER body needs x-amz-trailer")
        return
    if not check.expects_trailer:
        raise BadRequest("InvalidRequest", "x-amz-trailer on a body without a trailer")
    algorithm = _checksum_header(trailer)
    if algorithm is None or check.checksum is not None:
        raise BadRequest("InvalidRequest", "the trailer must be one x-amz-checksum-*")
    check.trailer = trailer
    check.checksum = _Checksum(algorithm, _ALGORITHMS[algorithm]())
