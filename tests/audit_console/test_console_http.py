"""The audit console over HTTP, against the real control plane's TokenReview and RBAC.

What must hold (issue 16, and what a bank's auditor expects of a web page holding its
audit trail): the console authorises exactly as the JSON API does — a tenant auditor gets
403 for another tenant's pages and entries, a token for another audience is refused —
its filters find what they say, every tenant-controlled string is escaped, the session
cookie is HttpOnly, SameSite=Strict, short-lived and Secure over TLS, the token never
appears in a cookie, a page or a log line, forms cannot be posted from another site,
signing out ends the session on the server, and every response forbids inline script.
"""

from __future__ import annotations

import base64
import json
import re
from http.cookies import SimpleCookie

import httpx
import pytest
from structlog.testing import capture_logs

from audit.checkpoint import open_checkpoint
from audit.console import CONTENT_SECURITY_POLICY
from audit.merkle import leaf_hash, verify_inclusion
from tests.audit_console.conftest import HOSTILE, SECRET_OF_B, Console
from tests.audit_service.conftest import LAYOUTS

pytestmark = [
    pytest.mark.integration,
    # Each test runs against the writer's listener and against the read server.
    pytest.mark.parametrize("console", LAYOUTS, indirect=True),
]

_ROW = re.compile(r'class="entry-link" href="[^"]*/entries/(\d+)"')


def _client(console: Console) -> httpx.Client:
    return httpx.Client(base_url=console.url, timeout=30, follow_redirects=False)


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in(
    console: Console, who: str, tenant: str | None, **headers: str
) -> tuple[httpx.Client, httpx.Response]:
    """A client that posted the sign-in form as ``who``; and the answer."""
    web = _client(console)
    form = web.get("/console/login", headers=headers)
    nonce = _csrf(form)
    # Sent by hand: over "TLS" (a forwarded scheme) the cookie is Secure, and this
    # client, talking plain HTTP, would rightly not send it back.
    cookie = {"Cookie": f"regsandbox_console_login={nonce}"}
    answer = web.post(
        "/console/login",
        data={"csrf": nonce, "token": console.tokens[who], "tenant": tenant or ""},
        headers={**headers, **cookie},
    )
    return web, answer


def _shown(page: httpx.Response) -> list[int]:
    """The entry indices a page lists, in its order."""
    assert page.status_code == 200, page.text
    return [int(i) for i in _ROW.findall(page.text)]


def _listed(page: httpx.Response) -> list[int]:
    """The entry indices a page lists, oldest first (pages list the newest first)."""
    shown = _shown(page)
    assert shown == sorted(shown, reverse=True), shown
    return shown[::-1]


def _cookie(answer: httpx.Response, name: str) -> SimpleCookie:
    for value in answer.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(value)
        if name in jar:
            return jar
    raise AssertionError(f"no {name} cookie set: {answer.headers.get_list('set-cookie')}")


def test_signing_in_gives_a_short_lived_httponly_strict_cookie_and_no_token(
    console: Console,
) -> None:
    token = console.tokens["tenant-a"]
    with capture_logs() as logs:
        web, answer = sign_in(console, "tenant-a", console.tenant_a)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/tenants/{console.tenant_a}/entries"
    morsel = _cookie(answer, "regsandbox_console")["regsandbox_console"]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/console"
    assert not morsel["secure"]  # plain HTTP here; see the TLS test below
    assert 0 < int(morsel["max-age"]) <= 900
    assert token not in morsel.value
    assert len(morsel.value) >= 40
    page = web.get(answer.headers["location"])
    assert page.status_code == 200
    assert token not in page.text
    assert "system:serviceaccount:" in page.text  # who is signed in
    assert logs, "sign-in is logged"
    assert all(token not in repr(event) for event in logs)


def test_over_tls_the_cookie_is_secure(console: Console) -> None:
    # A TLS-terminating proxy on the same host tells uvicorn the scheme it was reached by.
    _, answer = sign_in(console, "platform", None, **{"X-Forwarded-Proto": "https"})
    assert answer.status_code == 303
    assert _cookie(answer, "regsandbox_console")["regsandbox_console"]["secure"]


def test_plain_http_to_another_host_still_gets_a_secure_cookie_and_a_warning(
    console: Console,
) -> None:
    # Plain HTTP for a name other than this machine's: a proxy that did not say it
    # terminated TLS, or no TLS at all. Either way the cookie must not travel in clear.
    web = _client(console)
    form = web.get("/console/login", headers={"Host": "audit.bank.example"})
    assert form.status_code == 200
    assert 'id="plain"' in form.text
    assert _cookie(form, "regsandbox_console_login")["regsandbox_console_login"]["secure"]
    local = web.get("/console/login")
    assert 'id="plain"' not in local.text
    assert not _cookie(local, "regsandbox_console_login")["regsandbox_console_login"]["secure"]


def test_sign_in_refuses_other_audiences_unbound_users_and_forged_forms(console: Console) -> None:
    _, wrong = sign_in(console, "wrong-audience", console.tenant_a)
    assert wrong.status_code == 401
    assert "regsandbox_console=" not in wrong.headers.get("set-cookie", "")
    _, nobody = sign_in(console, "nobody", console.tenant_a)
    assert nobody.status_code == 403
    _, elsewhere = sign_in(console, "tenant-a", console.tenant_b)
    assert elsewhere.status_code == 403
    web = _client(console)
    data = {"csrf": "guessed", "token": console.tokens["tenant-a"], "tenant": console.tenant_a}
    assert web.post("/console/login", data=data).status_code == 403  # no form nonce
    form = web.get("/console/login")
    forged = web.post(
        "/console/login",
        data={**data, "csrf": _csrf(form)},
        headers={"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert forged.status_code == 403
    assert "regsandbox_console=" not in forged.headers.get("set-cookie", "")


def test_a_tenant_auditor_gets_403_for_every_page_of_another_tenant(console: Console) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    other = console.of("b-loans-read")[0]
    for path in (
        f"/console/tenants/{console.tenant_b}/entries",
        f"/console/tenants/{console.tenant_b}/entries/{other}",
        f"/console/tenants/{console.tenant_b}/exports",
        f"/console/tenants/{console.tenant_b}/timeline",
        f"/console/tenants/{console.tenant_b}/checkpoints",
        f"/console/tenants/{console.tenant_b}/proof/consistency?old=1",
        f"/console/tenants/{console.tenant_a}/entries/{other}",  # B's entry in A's scope
        f"/console/tenants/{console.tenant_a}/entries/{console.of('platform')[0]}",
        "/console/log/entries",
        f"/console/log/entries/{console.of('a-loans-read')[0]}",
    ):
        page = web.get(path)
        assert page.status_code == 403, path
        assert SECRET_OF_B not in page.text, path


def test_a_tenant_auditors_pages_hold_only_their_tenants_entries(console: Console) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    base = f"/console/tenants/{console.tenant_a}"
    mine = set(console.of(*(k for k in console.indices if k.startswith("a-"))))
    for path in ("entries", "exports", "timeline", "entries?dataset=loans"):
        page = web.get(f"{base}/{path}")
        assert page.status_code == 200, path
        assert SECRET_OF_B not in page.text, path
        assert console.tenant_b not in page.text, path
        assert set(_ROW.findall(page.text)) <= {str(i) for i in mine}
    # a tenant filter naming the other tenant finds nothing in this scope
    page = web.get(f"{base}/entries", params={"tenant": console.tenant_b, "dataset": "loans"})
    assert _listed(page) == console.of("a-loans-read", "a-loans-read-march", "a-denied")


def test_filters_find_a_datasets_reads_by_sandbox_actor_outcome_and_time(
    console: Console,
) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    url = f"/console/tenants/{console.tenant_a}/entries"
    loans = console.of("a-loans-read", "a-loans-read-march")
    assert _listed(web.get(url, params={"dataset": "loans", "action": "dataset.read"})) == (
        console.of("a-loans-read", "a-loans-read-march", "a-denied")
    )
    reads = {"dataset": "loans", "outcome": "success"}
    assert _listed(web.get(url, params=reads)) == loans
    assert _listed(web.get(url, params={"dataset": "loans", "outcome": "denied"})) == (
        console.of("a-denied")
    )
    assert _listed(web.get(url, params={"actor": "intruder"})) == console.of("a-denied")
    january = {"dataset": "loans", "since": "2026-01-01", "until": "2026-02-01"}
    assert _listed(web.get(url, params=january)) == console.of("a-loans-read")
    march = {"dataset": "loans", "since": "2026-03-01T00:00", "outcome": "success"}
    assert _listed(web.get(url, params=march)) == console.of("a-loans-read-march")
    assert _listed(web.get(url, params={"sandbox": "other"})) == []
    assert _listed(web.get(url, params={"action": "model.export"})) == console.of("a-export")
    bad = web.get(url, params={"since": "last tuesday"})
    assert bad.status_code == 400
    assert "since" in bad.text


def test_the_platform_auditor_filters_the_whole_log_by_tenant(console: Console) -> None:
    web, answer = sign_in(console, "platform", None)
    assert answer.headers["location"] == "/console/log/entries"
    url = "/console/log/entries"
    both = console.of("a-loans-read", "a-loans-read-march", "b-loans-read", "a-denied")
    assert _listed(web.get(url, params={"dataset": "loans"})) == both
    only_b = {"dataset": "loans", "tenant": console.tenant_b}
    assert _listed(web.get(url, params=only_b)) == console.of("b-loans-read")
    platform = console.of("platform")[0]
    assert web.get(f"/console/log/entries/{platform}").status_code == 200


@pytest.mark.parametrize("order", ["", "oldest"])
def test_pages_follow_on_until_the_end_of_the_log(console: Console, order: str) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    url = f"/console/tenants/{console.tenant_a}/entries"
    seen: list[int] = []
    params = {"dataset": "bulk", "order": order}
    for _ in range(5):
        page = web.get(url, params=params)
        seen += _shown(page)
        found = re.search(r'id="next" href="[^"?]*\?([^"]+)"', page.text)
        if found is None:
            assert "End of the log." in page.text
            break
        params = dict(httpx.QueryParams(found.group(1).replace("&amp;", "&")))
    wanted = console.of("a-bulk-read")
    assert seen == (wanted if order == "oldest" else wanted[::-1])  # each once, in order
    assert len(seen) > 50  # it took more than one page


def test_tenant_controlled_strings_are_escaped_everywhere(console: Console) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    base = f"/console/tenants/{console.tenant_a}"
    hostile = console.of("a-hostile")[0]
    for path in (f"entries/{hostile}", "exports", "entries?dataset=notes"):
        page = web.get(f"{base}/{path}")
        assert page.status_code == 200
        assert "<script>window.__pwned" not in page.text, path
        assert "<script" not in page.text.replace(
            '<script src="/console/static/verify.js" defer></script>', ""
        ).replace('<script type="application/json" id="proof-data">', ""), path
    detail = web.get(f"{base}/entries/{hostile}").text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in detail
    assert "said \\&#34;yes\\&#34; &amp; &#39;no&#39;" in detail  # JSON's \" escaped too
    assert 'said \\"yes' not in detail
    review = web.get(f"{base}/exports").text
    assert "carol@bank" in review
    assert "&lt;script&gt;" in review
    assert HOSTILE not in review


def test_every_response_forbids_inline_script_and_framing(console: Console) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    base = f"/console/tenants/{console.tenant_a}"
    for path in (
        "/console/login",
        f"{base}/entries",
        f"{base}/entries/{console.of('a-loans-read')[0]}",
        f"{base}/exports",
        f"{base}/timeline",
        f"{base}/checkpoints",
        f"/console/tenants/{console.tenant_b}/entries",  # a 403 page
        "/console/static/verify.js",
        "/console/static/console.css",
    ):
        answer = web.get(path)
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY", path
    assert web.get("/console/static/../templates/base.html").status_code == 404
    assert web.get("/console/static/pages.py").status_code == 404


def test_signing_out_ends_the_session_on_the_server(console: Console) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    page_url = f"/console/tenants/{console.tenant_a}/entries"
    page = web.get(page_url)
    session = web.cookies["regsandbox_console"]
    refused = web.post("/console/logout", data={"csrf": "not-the-token"})
    assert refused.status_code == 403
    assert web.get(page_url).status_code == 200  # still signed in
    out = web.post("/console/logout", data={"csrf": _csrf(page)})
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    assert 'regsandbox_console=""' in out.headers["set-cookie"]
    replay = _client(console)
    replay.cookies.set("regsandbox_console", session, path="/console")
    again = replay.get(page_url)
    assert again.status_code == 303  # the old cookie no longer opens anything
    assert again.headers["location"] == "/console/login"


def test_a_bearer_header_reads_the_console_without_a_session(console: Console) -> None:
    web = _client(console)
    base = f"/console/tenants/{console.tenant_a}/entries"
    own = web.get(base, headers={"Authorization": f"Bearer {console.tokens['tenant-a']}"})
    assert own.status_code == 200
    assert _listed(own)
    assert "Sign out" not in own.text  # nothing to sign out of
    wrong = web.get(base, headers={"Authorization": f"Bearer {console.tokens['wrong-audience']}"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    nobody = web.get(base, headers={"Authorization": f"Bearer {console.tokens['nobody']}"})
    assert nobody.status_code == 403
    assert web.get(base).status_code == 303  # a browser with nothing is sent to sign in


def test_exports_show_each_step_and_the_review(console: Console) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    page = web.get(f"/console/tenants/{console.tenant_a}/exports")
    assert page.status_code == 200
    text = page.text
    for step in ("model.export.submitted", "model.export.reviewed", "model.export.released"):
        assert step in text
    assert "review-1: approve" in text
    assert "risk-model" in text
    assert SECRET_OF_B not in text


def test_the_timeline_groups_matches_by_day(console: Console) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    page = web.get(f"/console/tenants/{console.tenant_a}/timeline", params={"dataset": "loans"})
    assert page.status_code == 200
    days = re.findall(r"<h2>(\d{4}-\d\d-\d\d) <meter", page.text)
    assert days == ["2026-03-02", "2026-01-15"]  # newest first


def test_an_entry_page_carries_the_proof_the_json_api_returns(console: Console) -> None:
    web, _ = sign_in(console, "tenant-a", console.tenant_a)
    index = console.of("a-loans-read")[1]
    page = web.get(f"/console/tenants/{console.tenant_a}/entries/{index}")
    found = re.search(
        r'<script type="application/json" id="proof-data">(.*?)</script>', page.text, re.S
    )
    assert found, page.text
    embedded = json.loads(found.group(1))
    api = httpx.get(
        f"{console.url}/v1/tenants/{console.tenant_a}/entries/{index}",
        headers={"Authorization": f"Bearer {console.tokens['tenant-a']}"},
        timeout=30,
    )
    assert api.status_code == 200
    assert embedded == api.json()
    # and it is a proof: the project's own verifier accepts it against the signed checkpoint
    checkpoint = open_checkpoint(embedded["checkpoint"].encode(), [console.signer.verifier])
    verify_inclusion(
        leaf_hash(base64.b64decode(embedded["entry"])),
        index,
        checkpoint.size,
        [base64.b64decode(h) for h in embedded["inclusion"]],
        checkpoint.root,
    )
