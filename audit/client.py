"""Clients of the audit log for the operator and the gateway, failing closed.

:class:`AuditSink` is what a component needs: append a batch of events, fetch the latest
checkpoint, get a receipt for an entry. Two implementations:

- :class:`AuditClient` talks to ``sandboxctl audit serve`` over HTTP (httpx);
- :class:`LocalAuditSink` writes to a log directory in-process.

Both fail closed: if an append cannot be confirmed durable (an error, a timeout, a
non-2xx answer, a malformed answer) they raise :class:`AuditUnavailable`, so the caller
refuses the action it was about to log instead of carrying on unlogged. Nothing is ever
dropped silently, and a failed append is not retried behind the caller's back (it might
have been written; the caller decides).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx

from audit.checkpoint import open_checkpoint
from audit.entry import Event
from audit.errors import AuditError, MalformedError
from audit.log import AuditLog
from audit.note import Signer, Verifier, b64decode
from audit.proof import TlogProof

__all__ = [
    "AuditClient",
    "AuditRejected",
    "AuditSink",
    "AuditUnavailable",
    "LocalAuditSink",
    "TokenFile",
]


class AuditUnavailable(AuditError):  # noqa: N818 - the name callers were promised
    """The audit log did not confirm the operation; treat the events as not logged."""


class AuditRejected(AuditUnavailable):
    """The log refused the request itself (invalid event, bad token): retrying won't help.

    ``status`` is the HTTP status, or ``None`` for an in-process log.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuditSink(Protocol):
    """Where a component sends its audit events."""

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append ``events`` as one batch; return their indices once durable.

        Raises :class:`AuditUnavailable` if that cannot be confirmed.
        """
        ...

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint note."""
        ...

    def prove(self, index: int) -> bytes:
        """A C2SP tlog-proof receipt for entry ``index``."""
        ...


def _detail(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])[:200]
    return str(body)[:200]


class TokenFile(httpx.Auth):
    """A bearer token read from a file, again whenever the file changes.

    For a projected ServiceAccount token, which the kubelet replaces before it expires:
    the client presents the current one without restarting. A file that cannot be read
    (or is empty) fails the request as :class:`AuditUnavailable`, never sends an old or
    empty token.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[float, int] | None = None
        self._token = ""

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"  # never the token

    def current(self) -> str:
        """The token in the file now (re-read when its modification time or size changed)."""
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime, stat.st_size)
            if seen != self._seen:
                self._token = self.path.read_text().strip()
                self._seen = seen
        except OSError as exc:
            raise AuditUnavailable(
                f"cannot read the audit token file {self.path}: {exc.strerror or exc}"
            ) from None
        if not self._token:
            raise AuditUnavailable(f"the audit token file {self.path} is empty")
        return self._token

    def auth_flow(self, request: httpx.Request) -> Any:
        """Set ``Authorization: Bearer <current token>`` on ``request``."""
        request.headers["Authorization"] = f"Bearer {self.current()}"
        yield request


class AuditClient:
    """HTTP client of the audit service.

    ``token`` is the bearer token (a writer's, to append): a string, or a
    :class:`TokenFile` re-read when it changes (projected ServiceAccount tokens).
    ``verifiers``, if given, are the log's keys: checkpoints and receipts whose checkpoint
    they do not verify raise :class:`AuditUnavailable`. ``transport`` lets tests plug in
    an ASGI app.
    """

    def __init__(
        self,
        base_url: str,
        token: str | TokenFile | None = None,
        *,
        timeout: float = 5.0,
        verifiers: Iterable[Verifier] = (),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if isinstance(token, str) and token else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            auth=token if isinstance(token, TokenFile) else None,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )
        self.verifiers = tuple(verifiers)
        """Log keys that checkpoints must verify against (none: not checked)."""

    def __repr__(self) -> str:
        return f"AuditClient({str(self._http.base_url)!r})"  # never the token

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AuditUnavailable(
                f"audit service at {self._http.base_url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if 400 <= response.status_code < 500:
            raise AuditRejected(
                f"audit service refused {method} {path}: {response.status_code} "
                f"{_detail(response)}",
                response.status_code,
            )
        if response.status_code != 200:
            raise AuditUnavailable(
                f"audit service failed {method} {path}: {response.status_code} {_detail(response)}"
            )
        return response

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append ``events`` as one batch; return their indices once durable."""
        if not events:
            return []
        body = {"events": [e.model_dump(mode="json") for e in events]}
        response = self._request("POST", "/v1/entries", json=body)
        try:
            indices = response.json()["indices"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditUnavailable("audit service gave a malformed append answer") from exc
        if (
            not isinstance(indices, list)
            or len(indices) != len(events)
            or not all(type(i) is int and i >= 0 for i in indices)
        ):
            raise AuditUnavailable("audit service did not confirm every event of the batch")
        return list(indices)

    def _checked(self, note: bytes) -> bytes:
        if self.verifiers:
            try:
                open_checkpoint(note, self.verifiers)
            except AuditError as exc:
                raise AuditUnavailable(f"audit service checkpoint does not verify: {exc}") from exc
        return note

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint note (verified if :attr:`verifiers` are set)."""
        return self._checked(self._request("GET", "/v1/checkpoint").content)

    def prove(self, index: int) -> bytes:
        """A tlog-proof receipt for entry ``index`` (its checkpoint verified if keys set)."""
        data = self._request("GET", f"/v1/receipt/{index}").content
        try:
            proof = TlogProof.parse(data)
        except MalformedError as exc:
            raise AuditUnavailable(f"audit service gave a malformed receipt: {exc}") from exc
        if proof.index != index:
            raise AuditUnavailable(f"audit service gave a receipt for {proof.index}, not {index}")
        self._checked(proof.checkpoint)
        return data

    def entry(self, index: int) -> bytes:
        """The exact bytes of entry ``index``."""
        return self._request("GET", f"/v1/entries/{index}").content

    def entries(self, start: int, end: int) -> list[bytes]:
        """The exact bytes of entries ``[start, end)`` (at most 1,000 per call)."""
        data = self._request("GET", "/v1/entries", params={"start": start, "end": end}).content
        lines = data.split(b"\n")
        if lines[-1] != b"" or len(lines) - 1 != end - start:
            raise AuditUnavailable(f"audit service returned a short range [{start}, {end})")
        return lines[:-1]

    def _proof(self, path: str, params: dict[str, int]) -> list[bytes]:
        body = self._request("GET", path, params=params).json()
        try:
            return [b64decode(h, "proof hash") for h in body["hashes"]]
        except (KeyError, TypeError, MalformedError) as exc:
            raise AuditUnavailable(f"audit service gave a malformed proof: {exc}") from exc

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof of ``index`` in the tree of ``size`` entries."""
        return self._proof("/v1/proof/inclusion", {"index": index, "size": size})

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """Consistency proof from ``old`` to ``new`` entries."""
        return self._proof("/v1/proof/consistency", {"old": old, "new": new})

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalAuditSink:
    """An :class:`AuditSink` writing to a log directory in this process.

    Takes the directory's writer lock for as long as it is open.
    """

    def __init__(self, path: Path, signers: Signer | Sequence[Signer]) -> None:
        try:
            self.log = AuditLog(path, signers)
            """The open log."""
        except AuditError as exc:
            raise AuditUnavailable(f"cannot open audit log {path}: {exc}") from exc
        except OSError as exc:
            raise AuditUnavailable(f"cannot open audit log {path}: {exc.strerror}") from exc

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append ``events`` as one batch; return their indices once durable."""
        try:
            return self.log.append_batch(events)
        except MalformedError as exc:
            raise AuditRejected(f"audit log refused the batch: {exc}") from exc
        except (AuditError, OSError) as exc:
            raise AuditUnavailable(f"audit log could not make the batch durable: {exc}") from exc

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint note."""
        return self.log.checkpoint_note

    def prove(self, index: int) -> bytes:
        """A tlog-proof receipt for entry ``index``, signing a checkpoint if needed."""
        try:
            if self.log.checkpoint.size <= index < self.log.size:
                self.log.publish_checkpoint()
            return self.log.receipt(index).to_bytes()
        except IndexError as exc:
            raise AuditRejected(str(exc)) from exc
        except (AuditError, OSError) as exc:
            raise AuditUnavailable(f"audit log cannot prove entry {index}: {exc}") from exc

    def close(self) -> None:
        """Publish a final checkpoint and release the log."""
        self.log.close()

    def __enter__(self) -> LocalAuditSink:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
