"""Temporary S3 credentials for a sandbox pod, from its projected token (web identity).

A workload's SDK exchanges its projected ServiceAccount token (audience
``regsandbox-gateway``) for credentials with ``AssumeRoleWithWebIdentity``, the STS call
boto3, s3fs and the AWS SDKs make by themselves when ``AWS_WEB_IDENTITY_TOKEN_FILE``,
``AWS_ROLE_ARN`` and ``AWS_ENDPOINT_URL_STS`` are set.

**Stateless, so any replica verifies them.** The session token is the pod's projected
token and who it belongs to, sealed with AES-256-GCM (:mod:`cryptography`) under a key
derived from the server key every replica mounts from the same Secret. The secret
access key is not stored anywhere: it is ``HMAC-SHA256(server key, session token)``,
re-derived by whichever replica receives the request, and the access key id is derived
the same way. Nothing is kept per session.

**Use-time checks, not only issue-time.** Every S3 request opens the session token,
reviews the projected token inside it again with TokenReview (so deleting the pod, or
the token expiring, ends the session within ``review_cache_seconds``) and asks the grant
resolver about the sandbox and the dataset (so an expired sandbox or a revoked grant
is refused within ``grant_cache_seconds``).

**Bound to the pod's address.** The session also holds the address the pod asked from
(its pod IP, as the gateway's Service delivers it), and a request from any other address
is refused: credentials copied out of one pod are useless in another. A gateway behind
a proxy that hides client addresses should turn this off (``sts_bind_source_address``).

**Revocation.** Credentials live at most ``lifetime`` seconds (default one hour, the AWS
default; capped by the projected token's expiry and the sandbox's). To end every
outstanding session at once, put a new key first in the Secret and drop the old one;
to rotate without cutting anyone off, keep the old key second for one lifetime (the
first key seals, all of them open).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.errors import ConfigurationError, SandboxError
from sandbox.gateway.auth import Identity

__all__ = [
    "MAX_LIFETIME_SECONDS",
    "MIN_LIFETIME_SECONDS",
    "CredentialIssuer",
    "IssuedCredentials",
    "Session",
    "SessionRefused",
    "load_server_keys",
]

MIN_LIFETIME_SECONDS = 900
"""Shortest ``DurationSeconds`` a client may ask for (as AWS STS)."""
MAX_LIFETIME_SECONDS = 12 * 3600
"""Longest ``DurationSeconds`` a client may ask for (as AWS STS)."""

_PREFIX = "rsb1."
_AAD = b"regsandbox-gateway sts session v1"
_MAX_TOKEN = 16 * 1024


class SessionRefused(SandboxError):  # noqa: N818 - the S3 meaning, 403
    """A session token that is not ours, not for this key id, or expired.

    ``reason`` is the S3 error code: ``InvalidToken``, ``InvalidAccessKeyId`` or
    ``ExpiredToken``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class IssuedCredentials:
    """What ``AssumeRoleWithWebIdentity`` answers."""

    access_key_id: str
    """Public id of the credentials (derived from the session token)."""
    secret_access_key: str
    """The signing secret (derived; never stored, never logged)."""
    session_token: str
    """The sealed session."""
    expiration: float
    """Unix time the credentials stop working."""


@dataclass(frozen=True)
class Session:
    """An opened session token: whose it is and the secret to check signatures with."""

    web_token: str
    """The pod's projected token, reviewed again on every request."""
    namespace: str
    """Namespace of the pod's ServiceAccount at issue time."""
    pod: str | None
    """Pod the projected token was bound to at issue time."""
    source: str | None
    """Network address the credentials were issued to (the pod's IP), if bound."""
    secret_access_key: str
    """The signing secret of this session."""
    expiration: float
    """Unix time the session ends."""


def load_server_keys(path: Path) -> list[bytes]:
    """The server keys in ``path``: one per line, base64 or hex, at least 32 bytes each.

    Raises:
        ConfigurationError: unreadable file, no key, or a key too short.
    """
    try:
        lines = path.read_text(encoding="utf-8").split()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the STS key file {path}: {exc.strerror}") from None
    keys: list[bytes] = []
    for line in lines:
        try:
            key = bytes.fromhex(line) if len(line) % 2 == 0 and _is_hex(line) else b""
            key = key or base64.b64decode(line, validate=True)
        except (ValueError, binascii.Error):
            raise ConfigurationError(
                f"the STS key file {path} holds a line that is no key"
            ) from None
        if len(key) < 32:
            raise ConfigurationError(f"an STS key in {path} is shorter than 32 bytes")
        keys.append(key)
    if not keys:
        raise ConfigurationError(f"the STS key file {path} holds no key")
    return keys


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _derive(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, b"regsandbox-gateway sts " + purpose, hashlib.sha256).digest()


@dataclass(frozen=True)
class _Keys:
    seal: AESGCM
    secret: bytes


class CredentialIssuer:
    """Issues and opens stateless session credentials under the server keys."""

    def __init__(
        self,
        server_keys: Sequence[bytes],
        *,
        lifetime: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not server_keys:
            raise ValueError("at least one server key")
        self._keys = [
            _Keys(AESGCM(_derive(k, b"seal")), _derive(k, b"secret")) for k in server_keys
        ]
        self.lifetime = lifetime
        """Longest life of issued credentials, in seconds."""
        self._clock = clock

    def __repr__(self) -> str:
        return f"CredentialIssuer(keys={len(self._keys)}, lifetime={self.lifetime})"  # no keys

    def issue(
        self,
        web_token: str,
        identity: Identity,
        *,
        not_after: float,
        duration: int | None = None,
        source: str | None = None,
    ) -> IssuedCredentials:
        """Credentials for the pod ``identity`` that ``web_token`` proves, ending by
        ``not_after`` (the sandbox's expiry, the token's) and within ``duration``;
        usable only from address ``source`` if one is given."""
        now = self._clock()
        life = min(self.lifetime, duration or self.lifetime)
        expiration = float(int(min(now + life, not_after)))
        payload = {
            "v": 1,
            "t": web_token,
            "ns": identity.namespace,
            "pod": identity.pod,
            "src": source,
            "iat": int(now),
            "exp": int(expiration),
        }
        nonce = os.urandom(12)
        keys = self._keys[0]
        sealed = keys.seal.encrypt(nonce, json.dumps(payload).encode(), _AAD)
        token = _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return IssuedCredentials(
            _access_key_id(keys, token), _secret(keys, token), token, expiration
        )

    def open(self, session_token: str | None, access_key_id: str) -> Session:
        """The session ``session_token`` seals, if ``access_key_id`` is its id and it is
        still valid; SessionRefused otherwise."""
        if not session_token:
            raise SessionRefused(
                "InvalidAccessKeyId", "no X-Amz-Security-Token; use the credentials STS issued"
            )
        if len(session_token) > _MAX_TOKEN or not session_token.startswith(_PREFIX):
            raise SessionRefused(
                "InvalidToken", "the security token is not one this gateway issued"
            )
        body = session_token[len(_PREFIX) :]
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, binascii.Error):
            raise SessionRefused("InvalidToken", "the security token is malformed") from None
        for keys in self._keys:
            try:
                plain = keys.seal.decrypt(blob[:12], blob[12:], _AAD)
            except (InvalidTag, ValueError):
                continue
            return self._session(keys, session_token, access_key_id, plain)
        raise SessionRefused("InvalidToken", "the security token is not one this gateway issued")

    def _session(self, keys: _Keys, token: str, access_key_id: str, plain: bytes) -> Session:
        if not hmac.compare_digest(_access_key_id(keys, token), access_key_id):
            raise SessionRefused(
                "InvalidAccessKeyId", "the access key id does not belong to this security token"
            )
        payload = json.loads(plain)
        expiration = float(payload["exp"])
        if expiration <= self._clock():
            raise SessionRefused(
                "ExpiredToken", "the credentials have expired; assume the role again"
            )
        return Session(
            web_token=str(payload["t"]),
            namespace=str(payload["ns"]),
            pod=payload.get("pod"),
            source=payload.get("src"),
            secret_access_key=_secret(keys, token),
            expiration=expiration,
        )


def _access_key_id(keys: _Keys, token: str) -> str:
    mac = hmac.new(keys.secret, b"access-key-id\0" + token.encode(), hashlib.sha256).digest()
    return "ASIA" + base64.b32encode(mac[:10]).decode()


def _secret(keys: _Keys, token: str) -> str:
    mac = hmac.new(keys.secret, b"secret-access-key\0" + token.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()[:40]
