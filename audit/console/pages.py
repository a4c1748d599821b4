"""The console's routes: sign in and out, and the read-only pages of one scope.

Every page lives under one scope, as the JSON API does: ``/console/log/…`` for the
whole log and ``/console/tenants/{t}/…`` for one tenant's slice. Each request is
authorised by the service's own read check (the ``authorize`` given to
:func:`mount_console`, the one behind ``/v1``) with the bearer token of the caller's
session or of an ``Authorization: Bearer`` header, for that scope — so the console can
never show more than the API would. Pages are rendered on the server with every value
escaped (Jinja2 autoescaping); the only script is the service's own ``verify.js``.

Pages: ``entries`` (search and filter, paged), ``entries/{i}`` (one entry with its
inclusion proof, verified in the browser), ``exports`` (model exports and their
reviews), ``timeline`` (matches by day), ``checkpoints`` (the checkpoint history, each
proven consistent with the current one in the browser) and ``proof/consistency``
(JSON, for the page that checks a checkpoint the officer saved).
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from audit.access import Reader, Scope, Verb, check_tenant_name
from audit.checkpoint import Checkpoint
from audit.client_certs import TLS_EXTENSION
from audit.console.history import CheckpointHistory
from audit.console.query import EXPORT_ACTIONS, Filters, Found, Paging, Row, search
from audit.console.render import CONTENT_SECURITY_POLICY, b64, environment, harden, json_for_html
from audit.console.sessions import DEFAULT_SESSION_SECONDS, Session, SessionStore
from audit.errors import AuditError, MalformedError
from audit.tenants import TenantIndex

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SCAN_BUDGET",
    "ConsoleLog",
    "ConsoleSettings",
    "ConsoleSource",
    "ReadCheck",
    "mount_console",
]

SESSION_COOKIE = "regsandbox_console"
LOGIN_COOKIE = "regsandbox_console_login"
_PREFIX = "/console"
_PAGE = 50
SCAN_BUDGET = 5_000
"""Most entries one listing page (search, timeline) reads."""
_MAX_FORM = 64 * 1024
_MAX_TOKEN = 16 * 1024
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_STATIC = {
    "console.css": "text/css; charset=utf-8",
    "verify.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_log = structlog.get_logger("audit.console")

ReadCheck = Callable[[Request, Scope, Verb], Awaitable[Reader]]
"""The service's read check: the reader, allowed ``verb`` in ``scope``; raises 401/403/503."""


class ConsoleLog(Protocol):
    """What the console reads from the log (:class:`audit.log.AuditLog` provides it)."""

    def entry_bytes(self, index: int) -> bytes:
        """The exact stored bytes of entry ``index``."""
        ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of ``index`` in the tree of ``size`` entries."""
        ...

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size`` entries."""
        ...


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console runs; set once when the service starts."""

    session_seconds: float = DEFAULT_SESSION_SECONDS
    """How long a sign-in lasts (the token is still reviewed on every page)."""
    secure_cookies: bool | None = None
    """Mark cookies Secure: None for "unless plain HTTP to a loopback address" (so over
    TLS, and behind a TLS-terminating proxy); True always; False never."""


@dataclass(frozen=True)
class ConsoleSource:
    """Where the console's pages come from: the service's log and its read paths."""

    log: ConsoleLog
    current: Callable[[], tuple[bytes, Checkpoint]]
    """The latest checkpoint note and checkpoint (the service's own)."""
    tenants: TenantIndex
    """The index behind ``/v1/tenants/{t}/…``."""
    history: CheckpointHistory = field(default_factory=CheckpointHistory)
    """Checkpoints served so far."""
    spent: Callable[[str, int], None] | None = None
    """Told the reader's name and how many entries a listing page read (up to
    :data:`SCAN_BUDGET`): a read server charges them to the reader's rate."""


class _Refused(Exception):  # noqa: N818 - a refusal to show, not a fault
    """A sign-in refused: the status and what to tell the officer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _SignIn(Exception):  # noqa: N818 - control flow: send the browser to the sign-in page
    pass


@dataclass
class _Ctx:
    """One request's view: who, which scope, and the URLs of that scope."""

    reader: Reader
    tenant: str | None
    session: Session | None

    @property
    def base(self) -> str:
        return f"{_PREFIX}/log" if self.tenant is None else f"{_PREFIX}/tenants/{self.tenant}"

    @property
    def scope_name(self) -> str:
        return "the whole log" if self.tenant is None else f"tenant {self.tenant}"


class _Console:
    """The console's state and handlers (one per app)."""

    def __init__(
        self, source: ConsoleSource, authorize: ReadCheck, settings: ConsoleSettings
    ) -> None:
        self.source = source
        self.authorize = authorize
        self.settings = settings
        self.sessions = SessionStore(settings.session_seconds)
        self.env = environment()

    # -- responses -----------------------------------------------------------------------

    def page(self, name: str, code: int = 200, **values: Any) -> Response:
        html = self.env.get_template(name).render(**values)
        return harden(HTMLResponse(html, status_code=code))

    def error(
        self, request: Request, status: int, message: str, ctx: _Ctx | None = None
    ) -> Response:
        response = self.page("error.html", status, status=status, message=message, ctx=ctx)
        if status == 401 and request.headers.get("authorization"):
            response.headers["WWW-Authenticate"] = 'Bearer realm="regsandbox-audit"'
        return response

    def secure(self, request: Request) -> bool:
        """Whether cookies are Secure: over TLS, and to any host but this machine's.

        Plain HTTP is accepted only on loopback (``kubectl port-forward``); a request
        for another host over plain HTTP came through a TLS-terminating proxy that did
        not say so — or has no TLS at all, and then no cookie should be sent.
        """
        if self.settings.secure_cookies is not None:
            return self.settings.secure_cookies
        host = (request.url.hostname or "").lower()
        loopback = host in _LOOPBACK or host.endswith(".localhost")
        return request.url.scheme == "https" or not loopback

    def set_cookie(
        self, request: Request, response: Response, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=_PREFIX,
            secure=self.secure(request),
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, request: Request, response: Response, name: str) -> None:
        response.delete_cookie(
            name, path=_PREFIX, secure=self.secure(request), httponly=True, samesite="strict"
        )

    # -- who is asking -------------------------------------------------------------------

    def session_of(self, request: Request) -> tuple[str, Session] | None:
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id or len(session_id) > 128:
            return None
        session = self.sessions.get(session_id)
        return None if session is None else (session_id, session)

    def home(self, request: Request) -> _Ctx | None:
        """The signed-in officer's own scope, for the links of a page they were refused."""
        found = self.session_of(request)
        if found is None or request.headers.get("authorization"):
            return None
        session = found[1]
        return _Ctx(Reader(session.reader), session.tenant, session)

    async def check(self, request: Request, token: str, tenant: str | None, verb: Verb) -> Reader:
        """The service's read check, for ``token`` alone (a request carrying it as a
        bearer, and no client certificate: the service would read as the certificate
        first, leaving a pasted or a session's token unchecked)."""
        headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
        headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
        extensions = request.scope.get("extensions") or {}
        extensions = {k: v for k, v in extensions.items() if k != TLS_EXTENSION}
        return await self.authorize(
            Request({**request.scope, "headers": headers, "extensions": extensions}),
            Scope(tenant),
            verb,
        )

    async def context(self, request: Request, tenant: str | None, verb: Verb) -> _Ctx:
        """Who is asking, allowed to ``verb`` in ``tenant``'s scope; raises on refusal.

        A request with an ``Authorization`` header is checked with it alone; else the
        session's token is; with neither, the request as it came (a verified client
        certificate, or open reads), and failing that the browser is sent to sign in.
        """
        if tenant is not None:
            try:
                check_tenant_name(tenant)
            except MalformedError as exc:
                raise HTTPException(400, str(exc)) from None
        if request.headers.get("authorization"):
            reader = await self.authorize(request, Scope(tenant), verb)
            return _Ctx(reader, tenant, None)
        found = self.session_of(request)
        if found is None:
            # No token: what the service's check allows without one (a verified client
            # certificate, or open reads); anything else is sent to sign in.
            try:
                return _Ctx(await self.authorize(request, Scope(tenant), verb), tenant, None)
            except HTTPException as exc:
                if exc.status_code == 401:
                    raise _SignIn from None
                raise
        session_id, session = found
        try:
            reader = await self.check(request, session.token, tenant, verb)
        except HTTPException as exc:
            if exc.status_code == 401:  # the token expired or was revoked: the session ends
                self.sessions.close(session_id)
                raise _SignIn from None
            raise
        return _Ctx(reader, tenant, session)

    async def guarded(
        self,
        request: Request,
        tenant: str | None,
        verb: Verb,
        render: Callable[[_Ctx], Awaitable[Response]],
    ) -> Response:
        """Authorise, then render; refusals and failures become console pages."""
        ctx: _Ctx | None = None
        try:
            ctx = await self.context(request, tenant, verb)
            return await render(ctx)
        except _SignIn:
            response = harden(RedirectResponse(f"{_PREFIX}/login", status_code=303))
            self.clear_cookie(request, response, SESSION_COOKIE)
            return response
        except HTTPException as exc:
            return self.error(request, exc.status_code, str(exc.detail), ctx or self.home(request))
        except MalformedError as exc:
            return self.error(request, 400, str(exc), ctx)
        except AuditError as exc:
            _log.error("console read failed", path=request.url.path, error=str(exc))
            return self.error(request, 503, "the log cannot be read right now", ctx)

    # -- signing in -----------------------------------------------------------------------

    def login_page(
        self, request: Request, code: int = 200, message: str = "", tenant: str = ""
    ) -> Response:
        """The sign-in form, with a fresh CSRF nonce in a cookie and in the form."""
        nonce = secrets.token_urlsafe(32)
        plain = request.url.scheme != "https" and self.secure(request)
        response = self.page(
            "login.html", code, csrf=nonce, message=message, tenant=tenant, plain=plain, ctx=None
        )
        self.set_cookie(request, response, LOGIN_COOKIE, nonce, 1800)
        return response

    async def sign_in(self, request: Request) -> Response:
        """Check the posted token with the service's read check; open a session."""
        try:
            form = await _form(request)
        except HTTPException as exc:
            return self.error(request, exc.status_code, str(exc.detail))
        expected = request.cookies.get(LOGIN_COOKIE, "")
        sent = form.get("csrf", "")
        if not _same_origin(request) or not expected or not hmac.compare_digest(expected, sent):
            return self.error(
                request, 403, "the sign-in form expired or came from another site; reload it"
            )
        token = form.get("token", "").strip()
        tenant = form.get("tenant", "").strip() or None
        try:
            reader = await self._signing_in(request, token, tenant)
        except _Refused as exc:
            return self.login_page(request, exc.code, exc.message, tenant or "")
        session_id, _ = self.sessions.open(token, tenant, reader.name)
        _log.info("console sign-in", reader=reader.name, scope=str(Scope(tenant)))
        base = f"{_PREFIX}/log" if tenant is None else f"{_PREFIX}/tenants/{tenant}"
        response = harden(RedirectResponse(f"{base}/entries", status_code=303))
        self.set_cookie(request, response, SESSION_COOKIE, session_id, int(self.sessions.lifetime))
        self.clear_cookie(request, response, LOGIN_COOKIE)
        return response

    async def _signing_in(self, request: Request, token: str, tenant: str | None) -> Reader:
        if not token:
            raise _Refused(400, "Paste a token.")
        if len(token) > _MAX_TOKEN or not token.isascii() or not token.isprintable():
            raise _Refused(401, "That is not a bearer token.")
        try:
            if tenant is not None:
                check_tenant_name(tenant)
            return await self.check(request, token, tenant, "list")
        except MalformedError as exc:
            raise _Refused(400, str(exc)) from None
        except HTTPException as exc:
            why = {
                401: "The token was not accepted: it may be expired, or issued for another "
                "audience than the audit service's.",
                403: str(exc.detail),
            }.get(exc.status_code, "Access cannot be checked right now; try again shortly.")
            raise _Refused(exc.status_code, why) from None

    # -- reads ---------------------------------------------------------------------------

    def state(self) -> tuple[bytes, Checkpoint]:
        note, cp = self.source.current()
        self.source.history.observe(note)
        return note, cp

    async def find(
        self, ctx: _Ctx, filters: Filters, start: int | None, limit: int = _PAGE
    ) -> tuple[Found, bytes]:
        def run() -> tuple[Found, bytes]:
            note, cp = self.state()
            found = search(
                self.source.log.entry_bytes,
                self.source.tenants,
                ctx.tenant,
                filters,
                Paging(start, limit, SCAN_BUDGET, filters.newest_first),
                cp.size,
            )
            return found, note

        found, note = await run_in_threadpool(run)
        if self.source.spent is not None:
            self.source.spent(ctx.reader.name, found.scanned)
        return found, note

    async def own(self, ctx: _Ctx, index: int, size: int) -> None:
        """404 past the checkpoint; 403 for an entry outside a tenant's scope."""
        if not 0 <= index < size:
            raise HTTPException(404, f"no entry {index} in the checkpointed log of {size}")
        if ctx.tenant is None:
            return
        found = await run_in_threadpool(self.source.tenants.tenant_of, index, size)
        if found != ctx.tenant:
            raise HTTPException(403, f"entry {index} is not an entry of tenant {ctx.tenant}")


def _filters(request: Request, tenant: str | None) -> Filters:
    filters = Filters.from_query(request.query_params)
    return filters if tenant is None else filters.with_(tenant=tenant)


def _start(request: Request) -> int | None:
    raw = request.query_params.get("start")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 16:
        raise MalformedError("start: want a non-negative entry index")
    return int(raw)


def _day(row: Row) -> str:
    return row.when.date().isoformat() if row.when else "unknown time"


def _exports(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Export entries grouped per ModelExport (in the page's order), each export's steps
    in the order they happened."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        res = row.doc.get("resource") or {}
        key = (str(res.get("tenant") or ""), str(res.get("namespace") or ""), str(res.get("name")))
        group = groups.setdefault(
            key, {"tenant": key[0], "namespace": key[1], "name": key[2], "steps": []}
        )
        group["steps"].append(row)
    for group in groups.values():
        group["steps"].sort(key=lambda row: row.index)
    return list(groups.values())


def _timeline(rows: Sequence[Row]) -> list[dict[str, Any]]:
    days: dict[str, list[Row]] = {}
    for row in rows:
        days.setdefault(_day(row), []).append(row)
    most = max((len(r) for r in days.values()), default=1)
    return [{"day": d, "rows": r, "count": len(r), "most": most} for d, r in days.items()]


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise HTTPException(413, "the form is too large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items() if v}


def _same_origin(request: Request) -> bool:
    """False for a form posted from another site.

    Fetch Metadata decides when the browser sends it (every current browser does);
    otherwise the Origin, when it names one (with ``Referrer-Policy: no-referrer`` a
    browser sends ``Origin: null``). The form's nonce is checked in any case.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


def mount_console(
    app: FastAPI,
    source: ConsoleSource,
    authorize: ReadCheck,
    settings: ConsoleSettings | None = None,
) -> None:
    """Add the console's routes under ``/console`` to the service's ``app``."""
    console = _Console(source, authorize, settings or ConsoleSettings())
    _auth_routes(app, console)
    for base in ("/log", "/tenants/{tenant}"):
        _scope_routes(app, console, f"{_PREFIX}{base}")


def _auth_routes(app: FastAPI, console: _Console) -> None:  # noqa: C901 - one route each
    @app.get(_PREFIX, include_in_schema=False)
    @app.get(f"{_PREFIX}/", include_in_schema=False)
    async def home(request: Request) -> Response:
        found = console.session_of(request)
        if found is None:
            target = f"{_PREFIX}/login"
        else:
            tenant = found[1].tenant
            target = (
                f"{_PREFIX}/log/entries"
                if tenant is None
                else f"{_PREFIX}/tenants/{tenant}/entries"
            )
        return harden(RedirectResponse(target, status_code=303))

    @app.get(f"{_PREFIX}/static/{{name}}", include_in_schema=False)
    async def static(name: str) -> Response:
        media = _STATIC.get(name)
        if media is None:
            raise HTTPException(404, "no such file")
        data = resources.files("audit.console").joinpath("static", name).read_bytes()
        return harden(Response(data, media_type=media), cache="no-cache")

    @app.get(f"{_PREFIX}/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        return console.login_page(request)

    @app.post(f"{_PREFIX}/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        return await console.sign_in(request)

    @app.post(f"{_PREFIX}/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        found = console.session_of(request)
        try:
            form = await _form(request)
        except HTTPException as exc:
            return console.error(request, exc.status_code, str(exc.detail))
        if found is not None:
            session_id, session = found
            if not _same_origin(request) or not hmac.compare_digest(
                session.csrf, form.get("csrf", "")
            ):
                return console.error(request, 403, "sign out from the console's own page")
            console.sessions.close(session_id)
            _log.info("console sign-out", reader=session.reader)
        response = harden(RedirectResponse(f"{_PREFIX}/login", status_code=303))
        console.clear_cookie(request, response, SESSION_COOKIE)
        return response


def _scope_routes(app: FastAPI, console: _Console, base: str) -> None:  # noqa: C901
    """The pages of one scope (``base`` is ``/console/log`` or ``…/tenants/{tenant}``)."""

    @app.get(f"{base}/entries", include_in_schema=False)
    async def entries(request: Request) -> Response:
        tenant = request.path_params.get("tenant")

        async def render(ctx: _Ctx) -> Response:
            filters = _filters(request, ctx.tenant)
            found, _ = await console.find(ctx, filters, _start(request))
            return console.page("entries.html", ctx=ctx, filters=filters, found=found)

        return await console.guarded(request, tenant, "list", render)

    @app.get(f"{base}/entries/{{index}}", include_in_schema=False)
    async def entry(request: Request, index: int) -> Response:
        tenant = request.path_params.get("tenant")

        async def render(ctx: _Ctx) -> Response:
            note, cp = await run_in_threadpool(console.state)
            await console.own(ctx, index, cp.size)

            def read() -> tuple[bytes, list[bytes]]:
                return (
                    console.source.log.entry_bytes(index),
                    console.source.log.inclusion_proof(index, cp.size),
                )

            data, proof = await run_in_threadpool(read)
            proven = {
                "index": index,
                "entry": b64(data),
                "inclusion": [b64(h) for h in proof],
                "size": cp.size,
                "checkpoint": note.decode(),
            }
            return console.page(
                "entry.html",
                ctx=ctx,
                index=index,
                doc=json.loads(data),
                raw=data.decode("utf-8", "replace"),
                proof=[b64(h) for h in proof],
                proof_json=json_for_html(proven),
                note=note.decode(),
                size=cp.size,
            )

        return await console.guarded(request, tenant, "get", render)

    @app.get(f"{base}/exports", include_in_schema=False)
    async def exports(request: Request) -> Response:
        tenant = request.path_params.get("tenant")

        async def render(ctx: _Ctx) -> Response:
            filters = _filters(request, ctx.tenant).with_(action=EXPORT_ACTIONS)
            found, _ = await console.find(ctx, filters, _start(request), limit=500)
            return console.page(
                "exports.html", ctx=ctx, filters=filters, found=found, groups=_exports(found.rows)
            )

        return await console.guarded(request, tenant, "list", render)

    @app.get(f"{base}/timeline", include_in_schema=False)
    async def timeline(request: Request) -> Response:
        tenant = request.path_params.get("tenant")

        async def render(ctx: _Ctx) -> Response:
            filters = _filters(request, ctx.tenant)
            found, _ = await console.find(ctx, filters, _start(request), limit=500)
            return console.page(
                "timeline.html", ctx=ctx, filters=filters, found=found, days=_timeline(found.rows)
            )

        return await console.guarded(request, tenant, "list", render)

    @app.get(f"{base}/checkpoints", include_in_schema=False)
    async def checkpoints(request: Request) -> Response:
        tenant = request.path_params.get("tenant")

        async def render(ctx: _Ctx) -> Response:
            note, cp = await run_in_threadpool(console.state)

            def rows() -> list[dict[str, Any]]:
                out = []
                for seen in reversed(console.source.history.seen()):
                    old = seen.checkpoint.size
                    proof = (
                        console.source.log.consistency_proof(old, cp.size)
                        if 0 < old < cp.size
                        else []
                    )
                    out.append(
                        {
                            "seen": seen,
                            "root": b64(seen.checkpoint.root),
                            "proof": json_for_html([b64(h) for h in proof]),
                        }
                    )
                return out

            return console.page(
                "checkpoints.html",
                ctx=ctx,
                note=note.decode(),
                size=cp.size,
                root=b64(cp.root),
                rows=await run_in_threadpool(rows),
            )

        return await console.guarded(request, tenant, "get", render)

    @app.get(f"{base}/proof/consistency", include_in_schema=False)
    async def consistency(request: Request, old: int) -> Response:
        tenant = request.path_params.get("tenant")

        async def render(ctx: _Ctx) -> Response:
            _, cp = await run_in_threadpool(console.state)
            if not 0 < old <= cp.size:
                raise HTTPException(404, f"no proof from {old} to {cp.size}")
            proof = await run_in_threadpool(console.source.log.consistency_proof, old, cp.size)
            body = {"old": old, "new": cp.size, "hashes": [b64(h) for h in proof]}
            return harden(JSONResponse(body))

        return await console.guarded(request, tenant, "get", render)
