"""The human report: one self-contained HTML file a supervisor reads in any browser.

No scripts, no fonts, no images fetched from anywhere: styles are inline and the
timeline is an inline SVG. The report is a pure function of the evidence and the
findings, so ``sandboxctl evidence verify`` renders it again and insists on the same
bytes: what a person reads is what the evidence shows.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from sandbox.evidence.assess import Finding, LogFacts, Record
from sandbox.evidence.catalog import Control
from sandbox.evidence.collect import Scope

__all__ = ["render_report"]

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#1b1f24}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}code{font-size:.92em;word-break:break-all}
.status{font-weight:600;padding:2px 8px;border-radius:10px;white-space:nowrap}
.satisfied{background:#dafbe1;color:#116329}.not-satisfied{background:#ffebe9;color:#a40e26}
.not-applicable{background:#eaeef2;color:#57606a}
.summary span{display:inline-block;margin-right:1em;font-size:1.1em}
.muted{color:#57606a}
"""

_STATUS_TEXT = {
    "satisfied": "Satisfied",
    "not-satisfied": "Not satisfied",
    "not-applicable": "Not applicable",
}


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _short(text: str) -> str:
    return text[:19].replace("T", " ") + " UTC" if text else ""


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _entry(rec: Record) -> str:
    return f'<code title="entries.ndjson#{rec.index}">#{rec.index}</code>'


def _actor(rec: Record) -> str:
    actor = rec.actor
    return escape(str(actor.get("user") or actor.get("service_account") or "(unidentified)"))


def _controls(controls: Sequence[Control], findings: Sequence[Finding]) -> str:
    by_id = {c.id: c for c in controls}
    rows = []
    for f in findings:
        control = by_id[f.control]
        shown = "".join(
            f"<li><code>{escape(item)}</code>: {escape(why)}</li>"
            for item, why in f.violations[:20]
        )
        if len(f.violations) > 20:
            shown += f"<li>… and {len(f.violations) - 20} more (evidence.json)</li>"
        items = f"<ul>{shown}</ul>" if shown else f"{len(f.supporting)} supporting item(s)"
        rows.append(
            [
                f'<span class="status {f.status}">{_STATUS_TEXT[f.status]}</span>',
                escape(f"{control.regulation.split(' (')[0]} {control.label}"),
                f"<b>{escape(control.title)}</b><br>"
                f'<span class="muted">{escape(control.statement)}</span>',
                escape(f.reason),
                items,
            ]
        )
    return _table(["Status", "Article", "Control", "Finding", "Evidence"], rows, "no control")


def _timeline(records: Sequence[Record], findings: Sequence[Finding]) -> str:
    timed = [r for r in records if isinstance(r.doc.get("time"), str)]
    if not timed:
        return '<p class="muted">no entries</p>'
    times = [_when(str(r.doc["time"])) for r in timed]
    start, end = min(times), max(times)
    span = max((end - start).total_seconds(), 1.0)
    lanes = sorted({r.sandbox for r in timed if r.sandbox[1]})
    width, left, lane_h, top = 1100, 170, 46, 30
    height = top + lane_h * max(len(lanes), 1) + 60

    def x(when: dt.datetime) -> float:
        return left + (width - left - 20) * (when - start).total_seconds() / span

    bad = {item for f in findings for item, _ in f.violations}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Timeline" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="system-ui,sans-serif" font-size="12">'
    ]
    lane_of = {key: i for i, key in enumerate(lanes)}
    reads: dict[tuple[int, int], int] = defaultdict(int)
    for rec, when in zip(timed, times, strict=True):
        lane = lane_of.get(rec.sandbox)
        if lane is None:
            continue
        y = top + lane * lane_h + lane_h / 2
        if rec.action == "dataset.read" and rec.details.get("phase") in ("read", "completed"):
            reads[(lane, int(x(when)) // 4)] += 1
        mark = _MARKS.get(rec.action)
        if mark is not None:
            color, shape = mark
            parts.append(
                _shape(
                    shape,
                    x(when),
                    y,
                    color,
                    f"#{rec.index} {rec.action} {_short(str(rec.doc['time']))}",
                )
            )
        if rec.item in bad:
            parts.append(
                f'<circle cx="{x(when):.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#cf222e" '
                f'stroke-width="2"><title>#{rec.index}: breaks a control</title></circle>'
            )
    for key, lane in lane_of.items():
        y = top + lane * lane_h + lane_h / 2
        parts.insert(
            1,
            f'<text x="8" y="{y + 4:.1f}">{escape(key[1][:22])}</text>'
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" stroke="#d0d7de"/>',
        )
    for (lane, bucket), count in sorted(reads.items()):
        y = top + lane * lane_h + lane_h / 2
        parts.insert(
            1,
            f'<rect x="{bucket * 4}" y="{y - 14:.1f}" width="3" height="8" fill="#0969da">'
            f"<title>{count} read(s)</title></rect>",
        )
    base = height - 40
    parts.append(
        f'<text x="{left}" y="{base}">{escape(_short(_time_str(start)))}</text>'
        f'<text x="{width - 20}" y="{base}" text-anchor="end">'
        f"{escape(_short(_time_str(end)))}</text>"
    )
    legend = [("reads", "#0969da", "bar"), *[(a, c, s) for a, (c, s) in _MARKS.items()]]
    lx = 8
    for label, color, shape in legend:
        parts.append(_shape(shape, lx + 6, base + 22, color, label))
        parts.append(f'<text x="{lx + 16}" y="{base + 26}">{escape(label)}</text>')
        lx += 30 + 7 * len(label)
    parts.append("</svg>")
    return "".join(parts)


def _time_str(when: dt.datetime) -> str:
    """An aware time in the entries' format."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_MARKS: dict[str, tuple[str, str]] = {
    "sandbox.provisioned": ("#1a7f37", "square"),
    "dataset.granted": ("#1a7f37", "up"),
    "dataset.revoked": ("#57606a", "down"),
    "model.export.released": ("#bc4c00", "diamond"),
    "key.destroyed": ("#cf222e", "cross"),
    "sandbox.expired": ("#24292f", "square"),
    "sandbox.deleted": ("#24292f", "square"),
}


def _polygon(points: Sequence[tuple[float, float]], color: str, title: str) -> str:
    text = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return f'<polygon points="{text}" fill="{color}">{title}</polygon>'


def _shape(shape: str, x: float, y: float, color: str, title: str) -> str:
    t = f"<title>{escape(title)}</title>"
    if shape == "square":
        return (
            f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{color}">'
            f"{t}</rect>"
        )
    if shape == "up":
        return _polygon([(x, y - 7), (x - 6, y + 5), (x + 6, y + 5)], color, t)
    if shape == "down":
        return _polygon([(x, y + 7), (x - 6, y - 5), (x + 6, y - 5)], color, t)
    if shape == "diamond":
        return _polygon([(x, y - 7), (x + 7, y), (x, y + 7), (x - 7, y)], color, t)
    if shape == "cross":
        return (
            f'<path d="M{x - 6:.1f},{y - 6:.1f}L{x + 6:.1f},{y + 6:.1f}M{x + 6:.1f},{y - 6:.1f}'
            f'L{x - 6:.1f},{y + 6:.1f}" stroke="{color}" stroke-width="3">{t}</path>'
        )
    return f'<rect x="{x - 1:.1f}" y="{y - 8:.1f}" width="3" height="8" fill="{color}">{t}</rect>'


def _access(records: Sequence[Record]) -> str:
    groups: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for rec in records:
        if rec.action == "dataset.read" and rec.details.get("phase") in ("read", "completed"):
            groups[(rec.sandbox[1], _actor(rec), str(rec.resource.get("name")))].append(rec)
    rows = []
    for (sandbox, actor, dataset), recs in sorted(groups.items()):
        ok = [r for r in recs if r.outcome == "success"]
        sent = sum(int(r.details.get("bytes") or 0) for r in ok)
        rows.append(
            [
                escape(sandbox),
                actor,
                escape(dataset),
                str(len(ok)),
                f"{sent:,}",
                escape(_short(str(recs[0].doc.get("time")))),
                escape(_short(str(recs[-1].doc.get("time")))),
            ]
        )
    denied = [r for r in records if r.action == "dataset.read" and r.outcome != "success"]
    table = _table(
        ["Sandbox", "Workload", "Dataset", "Reads", "Bytes", "First", "Last"],
        rows,
        "no dataset was read",
    )
    return table + f'<p class="muted">{len(denied)} refused or failed read request(s).</p>'


def _exports(records: Sequence[Record]) -> str:
    rows = [
        [
            _entry(r),
            escape(_short(str(r.doc.get("time")))),
            escape(f"{r.resource.get('namespace')}/{r.resource.get('name')}"),
            escape(str(r.details.get("destination") or "")),
            f"<code>{escape(str(r.details.get('sha256') or ''))}</code>",
            escape(str(r.details.get("requester") or "")),
            escape(", ".join(str(a) for a in r.details.get("approvers") or [])),
        ]
        for r in records
        if r.action == "model.export.released"
    ]
    return _table(
        ["Entry", "Time", "Export", "Destination", "sha256", "Requested by", "Approved by"],
        rows,
        "nothing left the sandbox through the airlock",
    )


def _grants(records: Sequence[Record]) -> str:
    rows = [
        [
            _entry(r),
            escape(_short(str(r.doc.get("time")))),
            escape(r.sandbox[1]),
            escape(r.action.removeprefix("dataset.")),
            escape(str(r.details.get("dataset") or "")),
            escape(str(r.details.get("why") or ", ".join((r.decision or {}).get("codes") or []))),
        ]
        for r in records
        if r.action in ("dataset.granted", "dataset.revoked", "dataset.denied")
    ]
    return _table(["Entry", "Time", "Sandbox", "Change", "Dataset", "Why"], rows, "no grant")


def _lifecycle(records: Sequence[Record]) -> str:
    lives: dict[tuple[str, str], dict[str, Record]] = defaultdict(dict)
    for rec in records:
        if rec.action in (
            "sandbox.provisioned",
            "key.destroyed",
            "sandbox.expired",
            "sandbox.deleted",
        ):
            lives[rec.sandbox][rec.action.split(".")[1]] = rec
    rows = []
    for key, seen in sorted(lives.items()):
        prov, gone = seen.get("provisioned"), seen.get("destroyed")
        end = seen.get("expired") or seen.get("deleted")
        rows.append(
            [
                escape(key[1]),
                escape(_short(str(prov.doc.get("time")))) if prov else "",
                f"<code>{escape(str(prov.details.get('keyId') or ''))}</code>" if prov else "",
                (
                    escape(f"{end.action.split('.')[1]} {_short(str(end.doc.get('time')))}")
                    if end
                    else "running"
                ),
                (
                    escape(f"{gone.details.get('outcome')} {_short(str(gone.doc.get('time')))}")
                    if gone
                    else "not destroyed"
                ),
            ]
        )
    return _table(["Sandbox", "Provisioned", "Key", "Ended", "Key destroyed"], rows, "no sandbox")


def _decisions(records: Sequence[Record]) -> str:
    digests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rec in records:
        decision = rec.decision
        if decision and decision.get("policy_digest"):
            verdict = "allow" if decision.get("allow") else "deny"
            digests[str(decision["policy_digest"])][f"{rec.action} ({verdict})"] += 1
    rows = [
        [f"<code>{escape(d)}</code>", escape(", ".join(f"{a}: {n}" for a, n in sorted(c.items())))]
        for d, c in sorted(digests.items())
    ]
    return _table(["Policy bundle digest", "Decisions"], rows, "no policy decision in scope")


def _cluster(cluster: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for namespace, snap in sorted(cluster.items()):
        if not snap.get("exists", True):
            rows.append(
                [
                    escape(namespace),
                    "namespace deleted",
                    "",
                    "",
                    escape(_short(str(snap.get("readAt")))),
                ]
            )
            continue
        labels = ((snap.get("namespace") or {}).get("metadata") or {}).get("labels") or {}
        rows.append(
            [
                escape(namespace),
                escape(str(labels.get("pod-security.kubernetes.io/enforce") or "(none)")),
                escape(", ".join(p["metadata"]["name"] for p in snap.get("networkPolicies") or [])),
                escape(", ".join(q["metadata"]["name"] for q in snap.get("resourceQuotas") or [])),
                escape(_short(str(snap.get("readAt")))),
            ]
        )
    return _table(
        ["Namespace", "Pod Security (enforce)", "NetworkPolicies", "ResourceQuotas", "Read at"],
        rows,
        "the cluster was not read for this pack (no --kubeconfig); isolation rests on the log",
    )


def render_report(
    scope: Scope,
    generated: str,
    log: LogFacts,
    controls: Sequence[Control],
    findings: Sequence[Finding],
    records: Sequence[Record],
    cluster: Mapping[str, Mapping[str, Any]],
) -> bytes:
    """The HTML report (UTF-8 bytes)."""
    subject = f"tenant {scope.tenant}" + (f", sandbox {scope.sandbox}" if scope.sandbox else "")
    window = ""
    if scope.since or scope.until:
        since, until = scope.since or "the start", scope.until or "the checkpoint"
        window = f" — data-plane entries from {since} to {until}"
    counts: dict[str, int] = defaultdict(int)
    for f in findings:
        counts[f.status] += 1
    summary = "".join(
        f'<span class="status {s}">{counts[s]} {_STATUS_TEXT[s].lower()}</span>'
        for s in ("satisfied", "not-satisfied", "not-applicable")
    )
    witnesses = ", ".join(log.cosigners) or "none"
    sections = [
        f"<h1>Evidence pack: {escape(subject)}</h1>",
        f'<p class="muted">Generated {escape(_short(generated))}{escape(window)}. Audit log '
        f"<code>{escape(log.origin)}</code>, checkpoint size {log.size}; witnesses: "
        f"{escape(witnesses)}; {len(records)} entries in scope, each with a receipt.</p>",
        f'<p class="summary" id="summary">{summary}</p>',
        '<h2 id="controls">Controls</h2>',
        _controls(controls, findings),
        '<h2 id="timeline">Timeline</h2>',
        _timeline(records, findings),
        '<h2 id="access">Who accessed what</h2>',
        _access(records),
        '<h2 id="exports">What left</h2>',
        _exports(records),
        '<h2 id="grants">Grants and revocations</h2>',
        _grants(records),
        '<h2 id="destruction">Lifecycle and key destruction</h2>',
        _lifecycle(records),
        '<h2 id="policies">Policy decisions</h2>',
        _decisions(records),
        '<h2 id="isolation">Isolation objects in the cluster</h2>',
        _cluster(cluster),
        '<h2 id="verify">Checking this pack</h2>',
        "<p>This report is rendered from the evidence in the pack. Check the pack, its "
        "signature, every receipt and every finding, offline, with "
        "<code>sandboxctl evidence verify PACK --vkey published.vkey</code> (the keys of the "
        "pack's signer and of the audit log, obtained from the platform independently).</p>",
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Evidence pack: {escape(subject)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    return page.encode()
