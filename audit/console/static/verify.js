// regsandbox audit console: checks proofs in the browser, with the browser's own SHA-256
// and Ed25519 (WebCrypto), so an officer need not trust the service's word.
// RFC 6962 / RFC 9162: leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right).
"use strict";

const RegsandboxProof = (() => {
  const enc = new TextEncoder();
  const VKEY_ITEM = "regsandbox.audit.vkey";  // the published verifier key, once checked

  function fromB64(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function toB64(bytes) {
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  async function sha256(bytes) {
    if (!globalThis.crypto?.subtle) {
      throw new Error("this browser offers no WebCrypto here: open the console over https or on localhost");
    }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const leafHash = (entry) => sha256(concat(Uint8Array.of(0), entry));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  // RFC 9162 section 2.1.3.2; sizes and indices as BigInt (they may exceed 32 bits).
  async function rootFromInclusion(index, size, leaf, proof) {
    let fn = BigInt(index), sn = BigInt(size) - 1n, r = leaf;
    if (fn > sn || fn < 0n) return null;
    for (const p of proof) {
      if (p.length !== 32 || sn === 0n) return null;
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        if ((fn & 1n) === 0n) {
          while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    return sn === 0n ? r : null;
  }

  async function verifyInclusion(index, size, leaf, proof, root) {
    if (leaf.length !== 32 || root.length !== 32) return false;
    const got = await rootFromInclusion(index, size, leaf, proof);
    return got !== null && equal(got, root);
  }

  // RFC 9162 section 2.1.4.2.
  async function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
    let m = BigInt(first), n = BigInt(second);
    if (m <= 0n || m > n) return false;  // a proof from the empty tree proves nothing
    if (m === n) return proof.length === 0 && equal(firstRoot, secondRoot);
    if (firstRoot.length !== 32 || secondRoot.length !== 32) return false;
    if (proof.length === 0 || proof.some((p) => p.length !== 32)) return false;
    let path = proof;
    if ((m & (m - 1n)) === 0n) path = [firstRoot, ...proof];
    let fn = m - 1n, sn = n - 1n;
    while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; }
    let fr = path[0], sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0n) return false;
      if ((fn & 1n) === 1n || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn >>= 1n; sn >>= 1n;
    }
    return sn === 0n && equal(fr, firstRoot) && equal(sr, secondRoot);
  }

  // A C2SP signed note: text, a blank line, then "— name base64(keyid || signature)" lines.
  function splitNote(note) {
    const cut = note.lastIndexOf("\n\n");
    if (cut < 0) throw new Error("not a signed note");
    const text = note.slice(0, cut + 1);
    const signatures = note.slice(cut + 2).split("\n").filter((l) => l.startsWith("\u2014 "))
      .map((l) => { const [name, sig] = l.slice(2).split(" "); return { name, sig: fromB64(sig) }; });
    return { text, signatures };
  }

  // A checkpoint's text: "origin\nsize\nroot\n[extensions…]\n".
  function parseNote(note) {
    const { text, signatures } = splitNote(note);
    const lines = text.split("\n");
    if (lines.length < 4 || !/^[0-9]+$/.test(lines[1])) throw new Error("not a checkpoint");
    const root = fromB64(lines[2]);
    if (root.length !== 32) throw new Error("bad root hash");
    return { text, origin: lines[0], size: BigInt(lines[1]), root, signatures };
  }

  // C2SP signed-note: vkey "name+hash+base64(0x01 || key)", key id = SHA-256(name \n 0x01 key)[:4].
  async function verifyNoteSignature(note, vkey) {
    // The key's base64 may itself hold "+": split at the first two only.
    const found = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]+=*)$/.exec(vkey.trim());
    if (!found) throw new Error("a verifier key is name+hash+key");
    const [, name, hash, keyB64] = found;
    const key = fromB64(keyB64);
    if (key.length !== 33 || key[0] !== 1) throw new Error("not an Ed25519 verifier key");
    const id = (await sha256(concat(enc.encode(name + "\n"), key))).slice(0, 4);
    if (Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("") !== hash) {
      throw new Error("the key hash does not match the key");
    }
    const parsed = splitNote(note);
    const pub = await crypto.subtle.importKey("raw", key.slice(1), { name: "Ed25519" }, false, ["verify"]);
    for (const s of parsed.signatures) {
      if (s.name !== name || s.sig.length !== 68 || !equal(s.sig.slice(0, 4), id)) continue;
      if (await crypto.subtle.verify({ name: "Ed25519" }, pub, s.sig.slice(4), enc.encode(parsed.text))) {
        return true;
      }
    }
    return false;
  }

  function show(el, ok, message) {
    el.dataset.state = ok ? "verified" : "failed";
    el.className = el.className.replace(/\b(pending|verified|failed)\b/g, "").trim() + " " + el.dataset.state;
    el.textContent = message;
  }

  async function checkEntryPage() {
    const data = document.getElementById("proof-data");
    const verdict = document.getElementById("verdict");
    if (!data || !verdict) return;
    try {
      const p = JSON.parse(data.textContent);
      const cp = parseNote(p.checkpoint);
      if (cp.size !== BigInt(p.size)) throw new Error("the proof is for another tree size");
      const entry = fromB64(p.entry);
      const raw = document.getElementById("raw");
      if (raw && raw.textContent !== new TextDecoder().decode(entry)) {
        throw new Error("the bytes shown are not the bytes proven");
      }
      const leaf = await leafHash(entry);
      const ok = await verifyInclusion(p.index, p.size, leaf, p.inclusion.map(fromB64), cp.root);
      show(verdict, ok, ok
        ? `Verified: entry ${p.index} is in the log of ${p.size} entries with root hash ${toB64(cp.root)}, as the checkpoint below states.`
        : `NOT verified: the proof does not lead from this entry to the checkpoint's root hash.`);
    } catch (err) {
      show(verdict, false, `NOT verified: ${err.message}`);
    }
    const form = document.getElementById("vkey-form");
    const input = document.getElementById("vkey");
    const out = document.getElementById("signature");
    if (!form || !input || !out) return;
    const check = async () => {
      try {
        const note = document.getElementById("checkpoint-note").textContent;
        const ok = await verifyNoteSignature(note, input.value);
        if (ok) localStorage.setItem(VKEY_ITEM, input.value.trim());
        show(out, ok, ok ? "Signature verified with this key (remembered in this browser)."
                         : "NOT verified: no valid signature by this key.");
      } catch (err) {
        show(out, false, `NOT verified: ${err.message}`);
      }
    };
    form.addEventListener("submit", (event) => { event.preventDefault(); check(); });
    const remembered = localStorage.getItem(VKEY_ITEM);
    if (remembered) { input.value = remembered; await check(); }
  }

  async function checkHistory() {
    const table = document.getElementById("history");
    if (!table) return;
    const size = BigInt(table.dataset.size), root = fromB64(table.dataset.root);
    const remembered = localStorage.getItem(VKEY_ITEM);
    const signature = document.getElementById("current-signature");
    if (remembered && signature) {
      try {
        const ok = await verifyNoteSignature(document.getElementById("current-note").textContent, remembered);
        show(signature, ok, ok ? "The current checkpoint's signature verifies with the key you checked earlier."
                               : "NOT verified: the current checkpoint is not signed by the key you checked earlier.");
      } catch (err) {
        show(signature, false, `NOT verified: ${err.message}`);
      }
    }
    for (const row of table.querySelectorAll("tr.history-row")) {
      const cell = row.querySelector("td.verdict");
      try {
        const proof = JSON.parse(row.dataset.proof).map(fromB64);
        const ok = await verifyConsistency(BigInt(row.dataset.old), size, fromB64(row.dataset.oldRoot), root, proof);
        show(cell, ok, ok ? "consistent" : "NOT consistent");
      } catch (err) {
        show(cell, false, `NOT verified: ${err.message}`);
      }
    }
    const form = document.getElementById("saved-form");
    const out = document.getElementById("saved-verdict");
    form?.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const saved = parseNote(document.getElementById("saved").value.replace(/\r\n/g, "\n"));
        const url = `${form.dataset.proofUrl}?old=${saved.size}`;
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!response.ok) throw new Error(`the service answered ${response.status}`);
        const body = await response.json();
        if (BigInt(body.new) !== size) throw new Error("the log moved on; reload the page");
        const ok = await verifyConsistency(saved.size, size, saved.root, root, body.hashes.map(fromB64));
        show(out, ok, ok ? `Consistent: the current log extends your checkpoint of ${saved.size} entries.`
                         : "NOT consistent with the current checkpoint.");
      } catch (err) {
        show(out, false, `NOT verified: ${err.message}`);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => { checkEntryPage(); checkHistory(); });

  return { fromB64, toB64, leafHash, nodeHash, verifyInclusion, verifyConsistency, splitNote, parseNote, verifyNoteSignature };
})();
window.RegsandboxProof = RegsandboxProof;
