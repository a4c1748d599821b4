"""SigV4 verification of S3 requests, with botocore's signer; clock skew and replays.

The gateway does not implement the signature itself: it rebuilds the request exactly as
the client signed it (the headers named in ``SignedHeaders``, the raw path and query,
the claimed payload hash and the client's ``X-Amz-Date``) and asks
:class:`botocore.auth.S3SigV4Auth` for the canonical request, the string to sign and
the signature, which it compares with :func:`hmac.compare_digest`.

As S3 does, a request signed more than :data:`MAX_SKEW_SECONDS` away from the gateway's
clock is refused (``RequestTimeTooSkewed``). Unlike S3, a signature is accepted once:
:class:`ReplayGuard` remembers every verified signature for as long as the skew window
lets it be valid, in bounded memory (when full it refuses, it never forgets early).

One exception, for the clients the surface exists for: SigV4 dates have one-second
resolution and SDKs sign neither an invocation id nor the attempt number, so s3fs and
pyarrow send byte-identical ``HEAD``/``GET`` requests within the same second (seen in
the tests). A repeated *read* (GET, HEAD) is therefore accepted until
:data:`READ_REPLAY_GRACE_SECONDS` after its ``X-Amz-Date`` (each use is a separate,
audited request; whoever can replay that fast sees the live answers anyway), and
refused after that; a repeated write is always refused.
The memory is per replica; a replay sent to another replica is caught only by the
short credential lifetime and the per-request grant check.
"""

from __future__ import annotations

import calendar
import hashlib
import heapq
import hmac
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sandbox.errors import SandboxError

__all__ = [
    "MAX_SKEW_SECONDS",
    "READ_REPLAY_GRACE_SECONDS",
    "UNSIGNED_PAYLOAD",
    "BadRequest",
    "ReplayGuard",
    "ReplayMemoryFull",
    "RequestReplayed",
    "SeedSignature",
    "SignatureRefused",
    "SignedRequest",
    "Unsupported",
    "amz_time",
    "parse_authorization",
    "verify_signature",
]

MAX_SKEW_SECONDS = 15 * 60
"""Largest difference between the client's ``X-Amz-Date`` and the gateway's clock."""
READ_REPLAY_GRACE_SECONDS = 2.0
"""How long after its ``X-Amz-Date`` an identical read may be repeated."""
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
"""``X-Amz-Content-SHA256`` of a request whose body is not covered by the signature."""

_ALGORITHM = "AWS4-HMAC-SHA256"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^/,\s]{1,128})/(\d{8})/([a-z0-9-]{1,32})/"
    r"([a-z0-9-]{1,32})/aws4_request\s*,\s*SignedHeaders=([a-z0-9;._-]{1,2048})\s*,"
    r"\s*Signature=([0-9a-f]{64})$"
)
_AMZ_DATE = re.compile(r"^(\d{8})T(\d{6})Z$")


class SignatureRefused(SandboxError):  # noqa: N818 - the S3 meaning, 403
    """The request is not signed by credentials the gateway issued, or not now.

    ``reason`` is the S3 error code the client expects (``SignatureDoesNotMatch``,
    ``RequestTimeTooSkewed``, ``InvalidAccessKeyId``, ``ExpiredToken``, ``AccessDenied``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RequestReplayed(SignatureRefused):
    """A signature already used, outside the grace of an idempotent read (403)."""

    def __init__(self) -> None:
        super().__init__("RequestReplayed", "this signed request was already used; sign it again")


class ReplayMemoryFull(SignatureRefused):
    """The replay memory is full of signatures still inside their window (503)."""

    def __init__(self) -> None:
        super().__init__("SlowDown", "too many signed requests in the replay window; retry shortly")


class BadRequest(SandboxError):  # noqa: N818 - the S3 meaning, 400
    """A request the S3 or STS surface cannot take as sent (a body that is not the one
    the signed ``X-Amz-Content-SHA256`` names, a missing parameter, …); ``reason`` is
    the S3 or STS error code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unsupported(SandboxError):  # noqa: N818 - the S3 meaning, 501
    """An S3 operation (or encoding) the gateway does not offer: ``NotImplemented``."""


@dataclass(frozen=True)
class SignedRequest:
    """What the ``Authorization`` header of a SigV4 request says."""

    access_key_id: str
    """The access key the client signed with."""
    date: str
    """``YYYYMMDD`` of the credential scope."""
    region: str
    """Signing region."""
    service: str
    """Signing service (``s3``)."""
    signed_headers: tuple[str, ...]
    """Lower-case names of the headers covered by the signature."""
    signature: str
    """Hex signature."""


def parse_authorization(value: str | None) -> SignedRequest:
    """The parts of a SigV4 ``Authorization`` header; SignatureRefused if it is not one."""
    if not value:
        raise SignatureRefused("AccessDenied", "anonymous requests are not allowed; sign it")
    if not value.startswith(_ALGORITHM):
        raise SignatureRefused(
            "AccessDenied", "only AWS Signature Version 4 (AWS4-HMAC-SHA256) is accepted"
        )
    match = _AUTH.match(value.strip())
    if not match:
        raise SignatureRefused("AuthorizationHeaderMalformed", "malformed Authorization header")
    key, date, region, service, headers, signature = match.groups()
    names = tuple(headers.split(";"))
    if "host" not in names or list(names) != sorted(set(names)):
        raise SignatureRefused(
            "AuthorizationHeaderMalformed", "SignedHeaders must be sorted and include host"
        )
    return SignedRequest(key, date, region, service, names, signature)


def amz_time(value: str | None, now: float) -> float:
    """Seconds since the epoch of ``X-Amz-Date``; SignatureRefused if absent or skewed."""
    match = _AMZ_DATE.match(value or "")
    if not match:
        raise SignatureRefused("AccessDenied", "X-Amz-Date is missing or malformed")
    try:
        stamp = calendar.timegm(time.strptime(value or "", "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise SignatureRefused("AccessDenied", "X-Amz-Date is not a date") from None
    if abs(stamp - now) > MAX_SKEW_SECONDS:
        raise SignatureRefused(
            "RequestTimeTooSkewed",
            "the difference between the request time and the gateway's time is too large",
        )
    return float(stamp)


@dataclass(frozen=True)
class SeedSignature:
    """A verified request signature, which seeds the signature chain of an aws-chunked
    body (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``): each chunk is signed over the
    previous chunk's signature, the first over this one."""

    signature: str
    """The request's signature (hex)."""
    amz_date: str
    """``X-Amz-Date`` of the request."""
    scope: str
    """Credential scope, ``date/region/service/aws4_request``."""
    signer: S3SigV4Auth
    """botocore's signer with the session's secret key (derives the signing key)."""
    request: AWSRequest
    """The request as signed (its context carries the timestamp)."""

    def sign(self, string_to_sign: str) -> str:
        """HMAC-SHA256 of ``string_to_sign`` under the request's signing key (hex)."""
        signature: str = self.signer.signature(string_to_sign, self.request)
        return signature


def verify_signature(  # noqa: PLR0913 - the parts of the request, by keyword
    signed: SignedRequest,
    secret_key: str,
    *,
    method: str,
    host_url: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    amz_date: str,
) -> SeedSignature:
    """Recompute the signature with botocore over the request as received; compare.

    ``headers`` are the request's headers (lower-case names); only the signed ones are
    used, with the payload hash the client claimed (the body is checked separately).
    Returns the verified signature, which signs the chunks of an aws-chunked body.

    Raises:
        SignatureRefused: ``SignatureDoesNotMatch``, or the scope's date is not the
            request's.
    """
    if signed.date != amz_date[:8]:
        raise SignatureRefused("SignatureDoesNotMatch", "credential scope date is not X-Amz-Date")
    chosen: dict[str, str] = {}
    for name in signed.signed_headers:
        value = headers.get(name)
        if value is None:
            raise SignatureRefused("SignatureDoesNotMatch", f"signed header {name} is missing")
        chosen[name] = value
    url = host_url + raw_path + (f"?{raw_query}" if raw_query else "")
    request = AWSRequest(method=method, url=url, headers=chosen)
    request.context["timestamp"] = amz_date
    signer = S3SigV4Auth(
        Credentials(signed.access_key_id, secret_key), signed.service, signed.region
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected.encode(), signed.signature.encode()):
        raise SignatureRefused(
            "SignatureDoesNotMatch",
            "the request signature we calculated does not match the signature you provided",
        )
    return SeedSignature(
        signed.signature, amz_date, signer.credential_scope(request), signer, request
    )


class ReplayGuard:
    """Remembers verified signatures while they could still be accepted; thread-safe."""

    def __init__(
        self,
        *,
        window: float = MAX_SKEW_SECONDS,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._window = window
        self._max = max_entries
        self._clock = clock
        self._seen: set[bytes] = set()
        self._expiry: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, signature: str, signed_at: float, *, read: bool = False) -> None:
        """Record ``signature`` (signed at ``signed_at``); refuse it if seen before,
        unless ``read`` and within :data:`READ_REPLAY_GRACE_SECONDS` of ``signed_at``.

        Raises:
            RequestReplayed: the signature was seen before.
            ReplayMemoryFull: the memory is full of signatures still inside their
                window (fail closed).
        """
        digest = hashlib.sha256(signature.encode()).digest()
        now = self._clock()
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                self._seen.discard(heapq.heappop(self._expiry)[1])
            if digest in self._seen:
                if read and now <= signed_at + READ_REPLAY_GRACE_SECONDS:
                    return
                raise RequestReplayed
            if len(self._seen) >= self._max:
                raise ReplayMemoryFull
            self._seen.add(digest)
            heapq.heappush(self._expiry, (signed_at + self._window + 1, digest))
