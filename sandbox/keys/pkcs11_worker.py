"""The process that makes every PKCS#11 call of the ``pkcs11`` key provider.

The operator embeds the policy engine (``regopy``), whose shared library exports its own
C++ ``operator new/delete`` (snmalloc). Loaded into the same process, a PKCS#11 module
written in C++ (SoftHSM2 among them) then has memory it allocated with glibc freed into
the other allocator, and the operator's memory grows with every token call. So the
provider (:mod:`sandbox.keys.pkcs11`) runs no token call itself: it starts this module
as a fresh interpreter (``python -I .../pkcs11_worker.py``) that imports only the
standard library and ``python-pkcs11`` — never ``regopy`` or the rest of ``sandbox`` —
and sends it one request at a time over a pipe.

Protocol (the parent's stdin/stdout pipes, nothing else): each message is a 4-byte
big-endian length and a UTF-8 JSON object of at most :data:`MAX_FRAME` bytes. Byte
strings travel as lowercase hex. The first request is ``hello`` with the module path,
the token label and the PIN (so the PIN is never in the worker's argv or environment);
after it every request is ``{"op": <op>, "what": <description>, ...}`` with one of
:data:`OPS`, and every reply is ``{"ok": <result>}`` or ``{"error": <kind>, "message":
<text>}`` with a kind from :data:`ERROR_KINDS`. Messages name the token and the module,
never the PIN or key material. The worker exits when its input closes (the operator
exited) or its parent is gone.

The worker keeps one logged-in session, reopened after the token comes back, exactly as
the provider did in-process; the provider serialises the calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import sys
import threading
import time
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

__all__ = [
    "ERROR_KINDS",
    "KILL_AFTER_GENERATE",
    "MAX_FRAME",
    "OPS",
    "ProtocolError",
    "Token",
    "decode_frame_length",
    "encode_frame",
    "main",
    "write_all",
]

MAX_FRAME = 1 << 20
"""Largest message either side accepts (a frame claiming more is a protocol error)."""

OPS = frozenset(
    {"find", "generate", "wrap_new", "unwrap", "rewrap", "destroy", "destroy_all", "discard"}
)
"""The requests the worker answers after ``hello``."""

ERROR_KINDS = frozenset({"unavailable", "error", "not_found", "integrity", "state"})
"""``unavailable``: token/session/module gone (retry later); ``error``: refused (wrong
PIN, locked PIN, unexpected token error); ``not_found``: the KEK asked for is not on the
token; ``integrity``: a wrapped key failed to unwrap; ``state``: a KEK vanished mid-call."""

KILL_AFTER_GENERATE = "pkcs11-worker-after-generate"
"""Crash tests only: with ``REGSANDBOX_TEST_KILL_AT`` set to this when the worker starts,
the worker SIGKILLs itself after ``C_GenerateKey`` and before it replies."""

_HEADER = struct.Struct(">I")
_WRAP_MECHANISM = Mechanism.AES_KEY_WRAP
_DATA_KEY_BITS = 256

# The session (or the token behind it) is gone: drop the session, report unavailable.
_BROKEN = (
    p11.DeviceError,
    p11.DeviceMemory,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.SessionCount,
    p11.UserNotLoggedIn,
    p11.GeneralError,
    p11.FunctionFailed,
    p11.HostMemory,
)
_BAD_WRAPPED = (
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
)

_DATA_KEY_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: False,
    Attribute.SENSITIVE: False,
    Attribute.EXTRACTABLE: True,
}
"""A data key exists in the token only as a session object, for as long as one call."""


class ProtocolError(Exception):
    """A message that is not a well-formed frame of this protocol."""


class _RefusedError(Exception):
    """A call's answer that is an error reply, not a broken worker."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def encode_frame(message: dict[str, Any]) -> bytes:
    """One message as a length-prefixed JSON frame."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def decode_frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte header; refuses oversized frames."""
    if len(header) != _HEADER.size:
        raise ProtocolError("truncated frame header")
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return int(length)


def _read_exact(fd: int, count: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = count
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_message(fd: int) -> dict[str, Any] | None:
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, decode_frame_length(header))
    if body is None:
        raise ProtocolError("truncated frame body")
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a pipe may take it in parts)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _text(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"field {name!r} must be a non-empty string")
    return value


def _hex(request: dict[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(_text(request, name))
    except ValueError:
        raise ProtocolError(f"field {name!r} must be hex") from None


def _template(label: str, object_id: bytes | None = None) -> dict[Attribute, Any]:
    template: dict[Attribute, Any] = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.AES,
        Attribute.LABEL: label,
    }
    if object_id is not None:
        template[Attribute.ID] = object_id
    return template


class Token:
    """One logged-in session to one token, and the provider's operations on it.

    Used by :func:`main` inside the worker; tests may use it in their own process.
    """

    def __init__(self, module: str, token_label: str, pin: str) -> None:
        self._module = module
        self._token_label = token_label
        self._pin = pin
        self._session: Any = None

    def __repr__(self) -> str:
        return f"Token(module={self._module!r}, token_label={self._token_label!r})"

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:  # noqa: PLR0911 - one per reply kind
        """Answer one request (``op``, ``what`` and the op's fields) with a reply."""
        try:
            op = _text(request, "op")
            what = _text(request, "what")
        except ProtocolError as error:
            return {"error": "error", "message": f"bad request to the PKCS#11 worker: {error}"}
        where = f"PKCS#11 {what} on token {self._token_label!r}"
        if op not in OPS:
            return {"error": "error", "message": f"{where}: unknown operation {op!r}"}
        try:
            session = self._open(where)
            return {"ok": getattr(self, f"_op_{op}")(session, request)}
        except _RefusedError as refused:
            return {"error": refused.kind, "message": f"{where}: {refused.message}"}
        except ProtocolError as error:
            return {"error": "error", "message": f"bad request to the PKCS#11 worker: {error}"}
        except _BROKEN as error:
            self._drop()
            return {
                "error": "unavailable",
                "message": f"{where}: the token is unavailable ({type(error).__name__}); "
                "check the HSM and its network, then retry",
            }
        except p11.PKCS11Error as error:
            return {
                "error": "error",
                "message": f"{where}: the token refused the call ({type(error).__name__})",
            }

    def _open(self, where: str) -> Any:
        if self._session is not None:
            return self._session
        try:
            library = pkcs11.lib(self._module)
            token = library.get_token(token_label=self._token_label)
            try:
                self._session = token.open(rw=True, user_pin=self._pin)
            except p11.UserAlreadyLoggedIn:
                # Login belongs to the application: a session this process opened before
                # (and could not close, e.g. after the token hiccuped) still holds it, so
                # a new session is already the user's. Without this every later call would
                # fail until the worker restarts.
                self._session = token.open(rw=True)
        except p11.NoSuchToken:
            raise _RefusedError(
                "unavailable",
                f"no token with this label is present in module {self._module!r}; "
                "check the HSM, the slot and the token label",
            ) from None
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange) as error:
            raise _RefusedError(
                "error",
                f"the token refused the PIN ({type(error).__name__}); check the PIN Secret "
                "(repeated attempts may lock the token)",
            ) from None
        except (p11.PinLocked, p11.PinExpired, p11.UserPinNotInitialized) as error:
            raise _RefusedError(
                "error",
                f"the user PIN cannot be used ({type(error).__name__}); the token's "
                "security officer must reset it",
            ) from None
        except _BROKEN as error:
            raise _RefusedError(
                "unavailable", f"cannot open a session ({type(error).__name__}); retry later"
            ) from None
        except p11.PKCS11Error as error:
            # Loading failures (missing library, wrong architecture) arrive as the base
            # class; the message names the file, never the PIN.
            raise _RefusedError(
                "unavailable",
                f"cannot load or use module {self._module!r} ({type(error).__name__}); "
                "install the HSM client and check the path",
            ) from None
        return self._session

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(p11.PKCS11Error):
                session.close()

    def _kek(self, session: Any, label: str, object_id: bytes) -> Any | None:
        found = list(session.get_objects(_template(label, object_id)))
        return found[0] if found else None

    def _op_find(self, session: Any, request: dict[str, Any]) -> list[str]:
        label = _text(request, "label")
        return sorted(
            bytes(obj[Attribute.ID]).hex() for obj in session.get_objects(_template(label))
        )

    def _op_generate(self, session: Any, request: dict[str, Any]) -> None:
        session.generate_key(
            KeyType.AES,
            256,
            id=_hex(request, "id"),
            label=_text(request, "label"),
            store=True,
            capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.MODIFIABLE: False,
                Attribute.ENCRYPT: False,
                Attribute.DECRYPT: False,
                Attribute.SIGN: False,
                Attribute.VERIFY: False,
                Attribute.DERIVE: False,
            },
        )
        if os.environ.get("REGSANDBOX_TEST_KILL_AT") == KILL_AFTER_GENERATE:
            os.kill(os.getpid(), signal.SIGKILL)

    def _op_wrap_new(self, session: Any, request: dict[str, Any]) -> str:
        """A fresh data key from the token's RNG, returned only wrapped under the KEK."""
        kek = self._kek(session, _text(request, "label"), _hex(request, "id"))
        if kek is None:
            raise _RefusedError("state", "the token key vanished while in use")
        data_key = session.generate_key(
            KeyType.AES, _DATA_KEY_BITS, store=False, template=_DATA_KEY_TEMPLATE
        )
        try:
            wrapped: bytes = kek.wrap_key(data_key, mechanism=_WRAP_MECHANISM)
        finally:
            data_key.destroy()
        return wrapped.hex()

    def _unwrap_with(self, kek: Any, wrapped: bytes) -> Any:
        return kek.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            wrapped,
            mechanism=_WRAP_MECHANISM,
            store=False,
            capabilities=MechanismFlag(0),
            template=_DATA_KEY_TEMPLATE,
        )

    def _op_unwrap(self, session: Any, request: dict[str, Any]) -> str:
        label, object_id = _text(request, "label"), _hex(request, "id")
        kek = self._kek(session, label, object_id)
        if kek is None:
            raise _RefusedError("not_found", "the token key does not exist (destroyed)")
        try:
            data_key = self._unwrap_with(kek, _hex(request, "wrapped"))
        except (*_BAD_WRAPPED, p11.GeneralError) as error:
            if isinstance(error, p11.GeneralError):
                # SoftHSM2 answers a failed RFC 3394 integrity check with
                # CKR_GENERAL_ERROR: it is the wrapped key's fault only if the token
                # still answers; otherwise the token is unavailable.
                try:
                    self._kek(session, label, object_id)
                except p11.PKCS11Error:
                    raise error from None
            raise _RefusedError("integrity", "the wrapped key failed to unwrap") from None
        try:
            value = bytes(data_key[Attribute.VALUE])
        finally:
            data_key.destroy()
        return value.hex()

    def _op_rewrap(self, session: Any, request: dict[str, Any]) -> str:
        """Unwrap under the old KEK and wrap under the new, both inside the token."""
        label = _text(request, "label")
        old = self._kek(session, label, _hex(request, "old"))
        new = self._kek(session, label, _hex(request, "new"))
        if old is None or new is None:
            raise _RefusedError("state", "a token key vanished")
        try:
            data_key = self._unwrap_with(old, _hex(request, "wrapped"))
        except _BAD_WRAPPED:
            raise _RefusedError("integrity", "the wrapped key failed to unwrap") from None
        try:
            rewrapped: bytes = new.wrap_key(data_key, mechanism=_WRAP_MECHANISM)
        finally:
            data_key.destroy()
        return rewrapped.hex()

    def _op_destroy(self, session: Any, request: dict[str, Any]) -> None:
        label, object_id = _text(request, "label"), _hex(request, "id")
        for obj in list(session.get_objects(_template(label, object_id))):
            obj.destroy()

    def _op_destroy_all(self, session: Any, request: dict[str, Any]) -> list[str]:
        destroyed: list[str] = []
        for obj in list(session.get_objects(_template(_text(request, "label")))):
            object_id = bytes(obj[Attribute.ID]).hex()
            obj.destroy()
            destroyed.append(object_id)
        return sorted(destroyed)

    def _op_discard(self, session: Any, request: dict[str, Any]) -> None:
        ids = request.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ProtocolError("field 'ids' must be a list of hex strings")
        label = _text(request, "label")
        for object_id in ids:
            self._op_destroy(session, {"label": label, "id": object_id})


def _exit_with_parent(parent: int) -> None:
    # The pipe's EOF ends the loop when the parent exits; this covers a worker stuck
    # inside the module at that moment.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def main() -> int:
    """Serve requests from stdin until it closes; replies go to the original stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the operator's Ctrl-C is the parent's
    replies = os.dup(1)
    os.dup2(2, 1)  # anything the module prints goes to stderr, not into the protocol
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        hello = _read_message(0)
        if hello is None:
            return 0
        if hello.get("op") != "hello":
            raise ProtocolError("the first request must be hello")
        token = Token(_text(hello, "module"), _text(hello, "token"), _text(hello, "pin"))
        del hello
        write_all(replies, encode_frame({"ok": {"pid": os.getpid()}}))
        while (request := _read_message(0)) is not None:
            write_all(replies, encode_frame(token.handle(request)))
    except (ProtocolError, ValueError, OSError) as error:
        print(f"pkcs11 worker: stopping ({type(error).__name__})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
