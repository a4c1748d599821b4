"""The audit service's TLS listener for readers, with optional client-certificate login.

``sandboxctl audit serve --tls-listen … --tls-cert … --tls-key …`` adds a second
listener, beside the plain one the in-cluster writers use, where the service terminates
TLS itself. With ``--client-ca-file`` (for example the cluster's own client CA, the file
kube-apiserver gets as ``--client-ca-file``) the handshake asks for a client certificate
without requiring one:

- none presented: the request goes on to the bearer-token path;
- presented and verified against the bundle (chain, validity, client-auth purpose): the
  listener puts the chain in the ASGI TLS extension, and :mod:`audit.client_certs` maps
  it to a reader (CN the user, O the groups) whom the service authorises with the same
  SubjectAccessReview as a token's;
- presented and not verified (another CA, expired, not yet valid): OpenSSL aborts the
  handshake, so the request never reaches the service.

uvicorn (0.55) does not fill the ASGI TLS extension itself; :class:`PeerCertProtocol`
reads the verified peer certificate once per connection, after the handshake, and adds
it to each request's scope. Renegotiation is off (a connection keeps the identity of its
handshake) and TLS 1.2 is the oldest version accepted.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from audit.client_certs import TLS_EXTENSION

__all__ = ["PeerCertProtocol", "TlsListener", "serving"]


class _WithPeerCert:
    """An ASGI app that adds one connection's TLS facts to each request's scope."""

    def __init__(self, app: Any, tls: dict[str, Any]) -> None:
        self._app = app
        self._tls = tls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {})}}
            scope["extensions"][TLS_EXTENSION] = self._tls
        await self._app(scope, receive, send)


class PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, filling the ASGI TLS extension with the verified client
    certificate (``client_cert_chain``: the leaf, PEM; ``client_cert_error`` None)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Read the peer certificate the completed handshake verified."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            return
        der = ssl_object.getpeercert(binary_form=True)
        version = ssl_object.version()
        cipher = ssl_object.cipher()
        tls: dict[str, Any] = {
            "server_cert": None,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": version,
            "cipher_suite": cipher[0] if cipher else None,
        }
        self.app = _WithPeerCert(self.app, tls)


def _hardened(config: Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's context for the configured files, without renegotiation or TLS < 1.2."""
    ctx = default()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


@dataclass(frozen=True)
class TlsListener:
    """Where and how the TLS listener serves."""

    host: str
    """Address to bind."""
    port: int
    """Port to bind (0: any free one; see :attr:`uvicorn.Server.servers`)."""
    cert: Path
    """Serving certificate (PEM, chain after the leaf)."""
    key: Path
    """Its private key (PEM)."""
    client_ca: Path | None = None
    """CA bundle client certificates are verified against; None: no client certificates."""

    def config(self, app: Any) -> uvicorn.Config:
        """The uvicorn configuration of this listener for ``app``."""
        for what, path in (("certificate", self.cert), ("key", self.key), ("CA", self.client_ca)):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"TLS {what} file {path} does not exist")
        return uvicorn.Config(
            app,
            host=self.host,
            port=self.port,
            http=PeerCertProtocol,
            lifespan="off",  # the plain listener runs the app's lifespan
            log_config=None,
            log_level="warning",
            access_log=False,  # request lines may carry tokens
            server_header=False,
            ssl_certfile=str(self.cert),
            ssl_keyfile=str(self.key),
            ssl_ca_certs=str(self.client_ca) if self.client_ca else None,
            # Ask, do not require: no certificate means the bearer-token path; a
            # certificate that fails verification aborts the handshake.
            ssl_cert_reqs=ssl.CERT_OPTIONAL if self.client_ca else ssl.CERT_NONE,
            ssl_context_factory=_hardened,
        )


@contextmanager
def serving(app: Any, listener: TlsListener, *, timeout: float = 20.0) -> Iterator[uvicorn.Server]:
    """Serve ``app`` on ``listener`` in a background thread until the block ends.

    Raises:
        RuntimeError: it did not start within ``timeout`` seconds (e.g. the port is taken).
    """
    server = uvicorn.Server(listener.config(app))
    thread = threading.Thread(target=server.run, name="audit-tls", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the TLS listener did not start on {listener.host}:{listener.port}"
                )
            time.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
