"""The audit console in a real headless browser: Debian's chromium, driven by Playwright.

What must hold (issue 16): the console logs in with a test identity, filters to a
dataset's reads, opens an entry and shows its proof as verified — checked by the
browser's own WebCrypto, not taken from the service — and a tenant auditor's console
never shows another tenant's data. The browser's verifier is held to the RFC 6962 proof
vectors and the C2SP signed-note example of ``tests/vectors``: it must accept the good
proofs and reject every bad one, which is what makes "verified" on a page worth reading.

The browser is the system's ``chromium`` (``make deps`` installs it; Playwright's own
browser download is never used). Without it these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.entry import Actor, Event, Resource
from audit.note import Signer, sign_note
from tests.audit_console.conftest import SECRET_OF_B, Console

pytestmark = pytest.mark.integration

VECTORS = Path(os.environ.get("REGSANDBOX_VECTORS", Path(__file__).parents[1] / "vectors"))
CHROMIUM = ("chromium", "chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, under Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[dev]'")
    path = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    if path is None:
        pytest.fail(
            "the console's browser tests need Debian's chromium (make deps installs it); "
            "Playwright's own browser download is not used"
        )
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True, args=args)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies), recording console errors and CSP reports."""
    context = browser.new_context()
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.errors = errors
    try:
        yield opened
    finally:
        context.close()


def _sign_in(page: Any, console: Console, who: str, tenant: str | None) -> None:
    page.goto(f"{console.url}/console/login")
    page.fill("#token", console.tokens[who])
    page.fill("#tenant", tenant or "")
    with page.expect_navigation():
        page.click("#signin")
    assert "/console/login" not in page.url, page.inner_text("main")


def _settled(page: Any, selector: str) -> str:
    """The ``data-state`` of ``selector`` once the browser's check has finished."""
    page.wait_for_function(
        "s => { const e = document.querySelector(s); return e && e.dataset.state !== 'pending'; }",
        arg=selector,
        timeout=20_000,
    )
    return str(page.get_attribute(selector, "data-state"))


def _column(page: Any, n: int) -> list[str]:
    return [
        c.strip() for c in page.locator(f"#entries tbody tr td:nth-child({n})").all_inner_texts()
    ]


def test_an_officer_filters_a_datasets_reads_and_sees_an_entrys_proof_verified(
    page: Any, console: Console
) -> None:
    _sign_in(page, console, "tenant-a", console.tenant_a)
    assert page.url.endswith(f"/console/tenants/{console.tenant_a}/entries")
    page.fill("input[name=dataset]", "loans")
    page.fill("input[name=action]", "dataset.read")
    page.select_option("select[name=outcome]", "success")
    with page.expect_navigation():
        page.click("#apply")
    wanted = console.of("a-loans-read", "a-loans-read-march")
    assert [int(i) for i in _column(page, 1)] == wanted[::-1]  # newest first
    assert set(_column(page, 3)) == {"dataset.read"}
    assert set(_column(page, 6)) == {console.tenant_a}
    assert SECRET_OF_B not in page.content()

    with page.expect_navigation():
        page.click(f"a.entry-link >> text='{wanted[1]}'")
    assert page.url.endswith(f"/entries/{wanted[1]}")
    assert _settled(page, "#verdict") == "verified"
    assert page.inner_text("#verdict").startswith("Verified")
    assert "audit.regsandbox.test/console" in page.inner_text("#checkpoint-note")

    page.fill("#vkey", console.signer.verifier.vkey)
    page.click("#vkey-check")
    assert _settled(page, "#signature") == "verified", page.inner_text("#signature")
    stranger = Signer.generate(console.signer.name)  # same name, another key
    page.evaluate("document.getElementById('signature').dataset.state = 'pending'")
    page.fill("#vkey", stranger.verifier.vkey)
    page.click("#vkey-check")
    assert _settled(page, "#signature") == "failed"
    # The key that verified is remembered: the next entry's checkpoint is checked with it.
    page.goto(f"{console.url}/console/tenants/{console.tenant_a}/entries/{wanted[0]}")
    assert _settled(page, "#verdict") == "verified"
    assert _settled(page, "#signature") == "verified"
    assert page.input_value("#vkey") == console.signer.verifier.vkey
    page.goto(f"{console.url}/console/tenants/{console.tenant_a}/checkpoints")
    assert _settled(page, "#current-signature") == "verified"
    assert page.errors == []  # no CSP violation, no script error


def test_markup_in_an_entry_is_shown_as_text_and_never_runs(page: Any, console: Console) -> None:
    _sign_in(page, console, "tenant-a", console.tenant_a)
    hostile = console.of("a-hostile")[0]
    page.goto(f"{console.url}/console/tenants/{console.tenant_a}/entries/{hostile}")
    assert _settled(page, "#verdict") == "verified"
    assert page.evaluate("window.__pwned") is None
    assert "<script>window.__pwned = 1</script>" in page.inner_text("#details")
    page.goto(f"{console.url}/console/tenants/{console.tenant_a}/exports")
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


def test_a_tenant_auditors_console_never_shows_another_tenant(page: Any, console: Console) -> None:
    _sign_in(page, console, "tenant-a", console.tenant_a)
    own = f"{console.url}/console/tenants/{console.tenant_a}"
    for path in ("entries", "exports", "timeline", "checkpoints", "entries?dataset=loans"):
        page.goto(f"{own}/{path}")
        text = page.content()
        assert SECRET_OF_B not in text, path
        assert console.tenant_b not in text, path
    theirs = console.of("b-loans-read")[0]
    for url in (
        f"{console.url}/console/tenants/{console.tenant_b}/entries",
        f"{console.url}/console/tenants/{console.tenant_b}/entries/{theirs}",
        f"{own}/entries/{theirs}",
        f"{console.url}/console/log/entries?dataset=loans",
    ):
        answer = page.goto(url)
        assert answer.status == 403, url
        assert SECRET_OF_B not in page.content(), url
    with page.expect_navigation():
        page.click("#logout")
    assert page.url.endswith("/console/login")
    page.goto(f"{own}/entries")
    assert page.url.endswith("/console/login")  # signed out on the server too


def _vectors(kind: str) -> list[dict[str, Any]]:
    files = sorted((VECTORS / "rfc6962" / kind).rglob("*.json"))
    assert len(files) > 50, f"RFC 6962 {kind} vectors missing under {VECTORS}"
    return [{**json.loads(f.read_text()), "file": str(f.relative_to(VECTORS))} for f in files]


_CHECK_VECTORS = """
async ([inclusion, consistency]) => {
  const P = window.RegsandboxProof;
  const b = (x) => P.fromB64(x);
  const out = [];
  for (const v of inclusion) {
    let ok = false;
    try {
      ok = await P.verifyInclusion(v.leafIdx, v.treeSize, b(v.leafHash),
                                   (v.proof || []).map(b), b(v.root));
    } catch (e) { ok = false; }
    out.push([v.file, ok]);
  }
  for (const v of consistency) {
    let ok = false;
    try {
      ok = await P.verifyConsistency(v.size1, v.size2, b(v.root1), b(v.root2),
                                     (v.proof || []).map(b));
    } catch (e) { ok = false; }
    out.push([v.file, ok]);
  }
  return out;
}
"""

_CHECK_NOTE = """
async ([note, vkey]) => {
  try { return await window.RegsandboxProof.verifyNoteSignature(note, vkey); }
  catch (e) { return false; }
}
"""


def test_the_browsers_verifier_agrees_with_the_rfc6962_and_c2sp_vectors(
    page: Any, console: Console
) -> None:
    page.goto(f"{console.url}/console/login")  # any console page loads verify.js
    page.wait_for_function("window.RegsandboxProof !== undefined")
    inclusion, consistency = _vectors("inclusion"), _vectors("consistency")
    results = dict(page.evaluate(_CHECK_VECTORS, [inclusion, consistency]))
    wrong = [v["file"] for v in inclusion + consistency if results[v["file"]] == bool(v["wantErr"])]
    assert wrong == []
    assert sum(results.values()) >= 4  # some proofs accepted, not only refusals

    example = json.loads((VECTORS / "c2sp/signed-note-example.json").read_text())
    note, vkey = example["note"], example["verifier_key"]
    assert page.evaluate(_CHECK_NOTE, [note, vkey]) is True
    flipped_text = note.replace("example", "exbmple", 1)
    assert page.evaluate(_CHECK_NOTE, [flipped_text, vkey]) is False
    sig_at = note.rindex(" ") + 5
    flipped_sig = note[:sig_at] + ("A" if note[sig_at] != "A" else "B") + note[sig_at + 1 :]
    assert page.evaluate(_CHECK_NOTE, [flipped_sig, vkey]) is False

    # A verifier key whose base64 holds "+", the separator of its fields.
    signer = next(
        s
        for s in (Signer.generate("log.example/plus") for _ in range(200))
        if "+" in s.verifier.vkey.split("+", 2)[2]
    )
    signed = sign_note("log.example/plus\n7\n" + "A" * 43 + "=\n", [signer]).decode()
    assert page.evaluate(_CHECK_NOTE, [signed, signer.verifier.vkey]) is True


def test_the_checkpoint_history_is_proven_consistent_in_the_browser(
    page: Any, console: Console
) -> None:
    _sign_in(page, console, "tenant-a", console.tenant_a)
    base = f"{console.url}/console/tenants/{console.tenant_a}"
    saved = console.log.checkpoint_note.decode()
    page.goto(f"{base}/checkpoints")  # the service serves (and remembers) this one
    for n in range(3):
        console.log.append(
            Event(
                actor=Actor(user="later"),
                action="dataset.read",
                resource=Resource(kind="Dataset", name=f"later-{n}", tenant=console.tenant_a),
                outcome="success",
            )
        )
    console.log.publish_checkpoint()
    page.goto(f"{base}/checkpoints")
    rows = page.locator("tr.history-row")
    assert rows.count() >= 2
    for n in range(rows.count()):
        assert _settled(page, f"tr.history-row:nth-child({n + 1}) td.verdict") == "verified"
    page.fill("#saved", saved)
    page.click("#saved-check")
    assert _settled(page, "#saved-verdict") == "verified"
    assert page.inner_text("#saved-verdict").startswith("Consistent")
    forged = saved.replace(saved.split("\n")[2], "A" * 43 + "=", 1)  # same size, other root
    page.evaluate("document.getElementById('saved-verdict').dataset.state = 'pending'")
    page.fill("#saved", forged)
    page.click("#saved-check")
    assert _settled(page, "#saved-verdict") == "failed"
    assert page.errors == []
