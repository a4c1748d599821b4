"""Benchmark: do readers slow appends? Same service, same run, rounds with and without a reader.

    python bench/audit_reads.py --pairs 6 --seconds 10 --dir /tmp/audit-reads [--reader entries]
        [--layout split|single] [--read-rate N]

Starts ``sandboxctl audit serve`` (a separate process, as the chart runs it) on a fresh
log, fills it with ``--prefill`` entries, then measures durable appends through the HTTP
API (``AuditClient.append``, batches of ``--batch``) in ``--pairs`` interleaved pairs of
rounds of ``--seconds`` each: a round with no reader, then a round with one reader in
another process paging through the whole log as fast as it can (``entries``: ``GET
/v1/entries`` ranges of 1,000; ``tenant``: a tenant's pages, each entry with its inclusion
proof; ``tiles``: C2SP entry bundles and hash tiles). Pairs alternate which round comes
first, so a drift of the (shared, noisy) machine weighs on both sides alike.

Reports appends/s of every round, the medians, the ratio of each pair (with / without)
and their median; the target is a median ratio of at least 0.90. The load average is
printed before and after, since other work on the machine moves every figure.

The service runs at nice ``--service-nice`` (-10 by default, as root): on a node it has
its CPU request. On a shared machine run the whole bench at that priority too
(``nice -n -10 python bench/audit_reads.py …``), so the machine's other work decides the
result less; ``--service-nice 0`` measures without either.

``--layout split`` (the default, as the chart runs it) starts the service with
``--read-listen``: reads go to the read server, a process of its own ``--read-nice``
steps below the writer (10 by default) and, with ``--read-sched idle`` (the default, as
the service's default ``--read-idle``), in Linux's SCHED_IDLE class; the reader pages
through the read port.
``--layout single`` is the earlier design, kept for the before/after row: one process
serves appends and reads, and the reader pages through the append port.

The reader client is the part of this bench that would not share the service's cores
in a cluster (an auditor's laptop, a SIEM, a mirror). Here it shares the two cores, so
in the split layout it runs at the read server's priority (``--reader-nice``, by
default the read server's nice value, and SCHED_IDLE with ``--read-sched idle``): the
same priority as the reads it asks for, below the writer and the appender. This favours
the appends over the reader more than a reader on another machine would be: a loaded
machine then starves the reader (its entries/s drop), which the result line shows.
In the single layout it runs at the bench's own priority, as
before. ``--read-rate`` is the read server's per-reader bound (entries/s; its default
when not given, 0 for none); the reader's achieved entries/s is printed with the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from audit.service import token_digest
from audit.signing import generate_key_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_append import make_event

ORIGIN = "bench.regsandbox.example/reads"

SANDBOXCTL = (sys.executable, "-m", "sandbox.cli")
"""This interpreter's ``sandboxctl``, whether or not a venv's bin is on PATH."""


def _reader(
    url: str,
    token: str,
    mode: str,
    stop: float,
    counter: Any,
    cpu: Any,
    nice: int | None,
    idle: bool,
) -> None:
    _lower(nice, idle)
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    reads = 0

    def get(path: str, **params: Any) -> httpx.Response | None:
        """200 answer, or None once ``stop`` is reached; a 429 is waited out (Retry-After)
        as a well-behaved reader does, and only what was served is counted."""
        while time.monotonic() < stop:
            answer = http.get(path, params=params)
            if answer.status_code != 429:
                answer.raise_for_status()
                return answer
            pause = float(answer.headers.get("retry-after", "1"))
            time.sleep(max(0.0, min(pause, stop - time.monotonic())))
        return None

    while time.monotonic() < stop:
        note = get("/v1/checkpoint")
        if note is None:
            break
        size = int(note.text.splitlines()[1])
        if mode == "entries":
            for start in range(0, size, 1000):
                end = min(size, start + 1000)
                if get("/v1/entries", start=start, end=end) is None:
                    break
                reads += end - start
        elif mode == "tenant":
            after: int | None = 0
            while after is not None:
                page = get("/v1/tenants/bank-a/entries", start=after, limit=1000)
                if page is None:
                    break
                body = page.json()
                reads += len(body["entries"])
                after = body["next"]
        else:
            for n in range(size // 256):
                bundle = get(f"/tlog/tile/entries/{_tile_index(n)}")
                if bundle is None or get(f"/tlog/tile/0/{_tile_index(n)}") is None:
                    break
                reads += 256
    counter.value = reads
    cpu.value = time.process_time()


def _tile_index(n: int) -> str:
    digits = f"{n:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


class Appender:
    """Posts batches of fresh events, rendered from one template (cheap for the client).

    Each event gets a new ``event_id``, nonce, request id and time, so the service
    appends every one (it answers a known event id with the index it has). Building
    events through pydantic would cost the client more CPU than the service spends on
    them, and on a small machine that competition is not what this bench measures.
    """

    def __init__(self, url: str, token: str, batch: int, rng: random.Random) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.batch = batch
        self.template = make_event(rng).model_dump(mode="json")
        self.appended = 0

    def post(self, count: int) -> int:
        """Append ``count`` fresh events as one batch; return how many were appended."""
        now = datetime.now(UTC).isoformat()
        events = []
        for _ in range(count):
            event = dict(self.template)
            event["event_id"] = str(uuid.uuid4())
            event["nonce"] = secrets.token_hex(16)
            event["request_id"] = f"req-{secrets.token_hex(6)}"
            event["time"] = now
            events.append(event)
        answer = self.http.post("/v1/entries", content=json.dumps({"events": events}))
        answer.raise_for_status()
        found = len(answer.json()["indices"])
        self.appended += found
        return found

    def run_for(self, seconds: float) -> float:
        """Append batches for ``seconds``; return entries per second."""
        appended = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            appended += self.post(self.batch)
        return appended / (time.monotonic() - start)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(
    appender: Appender,
    args: argparse.Namespace,
    url: str,
    token: str,
    servers: list[int],
    reader: bool,
) -> dict[str, float]:
    """One round, with a reader or without: appends/s, reads/s and CPU shares."""
    counter = multiprocessing.Value("q", 0)
    reader_cpu = multiprocessing.Value("d", 0.0)
    proc = None
    server_cpu, own_cpu = [_cpu_seconds(pid) for pid in servers], time.process_time()
    if reader:
        stop = time.monotonic() + args.seconds
        proc = multiprocessing.Process(
            target=_reader,
            args=(
                *(url, token, args.reader, stop, counter, reader_cpu),
                *(args.reader_nice, args.layout == "split" and args.read_sched == "idle"),
            ),
        )
        proc.start()
    rate = appender.run_for(args.seconds)
    if proc is not None:
        proc.join()
    return {
        "appends": rate,
        "reads": counter.value / args.seconds,
        "server_cpu": (_cpu_seconds(servers[0]) - server_cpu[0]) / args.seconds,
        "read_server_cpu": (
            (_cpu_seconds(servers[1]) - server_cpu[1]) / args.seconds if len(servers) > 1 else 0.0
        ),
        "client_cpu": (time.process_time() - own_cpu) / args.seconds,
        "reader_cpu": reader_cpu.value / args.seconds,
    }


def _read_server(args: argparse.Namespace, url: str) -> tuple[str, list[str]]:
    """Where the reader reads, and the service's read-server options (split layout)."""
    if args.layout != "split":
        return url, []
    options = ["--read-listen", f"127.0.0.1:{args.port + 1}", "--read-nice", str(args.read_nice)]
    options.append("--read-idle" if args.read_sched == "idle" else "--no-read-idle")
    if args.read_rate is not None:
        options += ["--read-rate", str(args.read_rate)]
    return f"http://127.0.0.1:{args.port + 1}", options


def _children(pid: int) -> list[int]:
    """Process ids of ``pid``'s children (the read server, in the split layout)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _lower(nice: int | None, idle: bool) -> None:
    """The reader client's priority: the read server's nice value, and its SCHED_IDLE."""
    if nice is not None:
        _renice(nice)
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _renice(value: int) -> None:
    """In the service's process before it starts: take nice ``value`` if allowed."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, value)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--prefill", type=int, default=200_000)
    parser.add_argument("--reader", choices=["entries", "tenant", "tiles"], default="entries")
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument(
        "--service-nice",
        type=int,
        default=-10,
        help="nice value of the audit service (0: as the clients; negative needs root)",
    )
    parser.add_argument(
        "--layout",
        choices=["split", "single"],
        default="split",
        help="split: reads on the read server (--read-listen); single: one process",
    )
    parser.add_argument("--read-nice", type=int, default=10, help="read server's nice steps")
    parser.add_argument("--read-rate", type=float, default=None, help="per-reader entries/s")
    parser.add_argument(
        "--read-sched",
        choices=["idle", "nice"],
        default="idle",
        help="read server (and reader client) in SCHED_IDLE, or at --read-nice only",
    )
    parser.add_argument(
        "--reader-nice",
        type=int,
        default=None,
        help="nice value of the reader client (default: the read server's in split layout)",
    )
    args = parser.parse_args()
    if args.reader_nice is None and args.layout == "split":
        args.reader_nice = min(19, args.service_nice + args.read_nice)
    if args.pairs < 5:
        parser.error("--pairs must be at least 5 for a median that means something")

    args.dir.mkdir(parents=True, exist_ok=False)
    log = args.dir / "log"
    key = args.dir / "log.key"
    generate_key_file(key, ORIGIN)
    subprocess.run(
        [*SANDBOXCTL, "audit", "init", "--log", str(log), "--origin", ORIGIN, "--key", str(key)],
        check=True,
        capture_output=True,
    )
    writer, reader = secrets.token_hex(16), secrets.token_hex(16)
    (args.dir / "writers").write_text(f"{token_digest(writer)} bench-writer\n")
    (args.dir / "readers").write_text(f"{token_digest(reader)} bench-reader\n")
    url = f"http://127.0.0.1:{args.port}"
    read_url, split = _read_server(args, url)
    load_before = _load()
    server = subprocess.Popen(
        [
            *SANDBOXCTL, "audit", "serve", "--log", str(log), "--key", str(key),
            "--writers", str(args.dir / "writers"), "--readers", str(args.dir / "readers"),
            "--listen", f"127.0.0.1:{args.port}", *split,
        ],
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: _renice(args.service_nice),
    )  # fmt: skip
    service_nice = os.getpriority(os.PRIO_PROCESS, server.pid)
    read_nice: int | None = None
    rounds: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    ratios: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{read_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the audit service did not start")
            time.sleep(0.1)
        appender = Appender(url, writer, args.batch, random.Random(7))
        for _ in range(0, args.prefill, 1000):
            appender.post(1000)
        time.sleep(1.5)  # let a checkpoint cover the prefill
        appender.run_for(min(3.0, args.seconds))  # warm up
        servers = [server.pid, *_children(server.pid)]
        read_nice = os.getpriority(os.PRIO_PROCESS, servers[-1]) if len(servers) > 1 else None
        for pair in range(args.pairs):
            found: dict[bool, dict[str, float]] = {}
            for with_reader in (False, True) if pair % 2 == 0 else (True, False):
                found[with_reader] = _round(appender, args, read_url, reader, servers, with_reader)
                rounds[with_reader].append(found[with_reader])
            ratios.append(found[True]["appends"] / found[False]["appends"])
            print(
                f"pair {pair + 1}: without {found[False]['appends']:,.0f}/s, "
                f"with {found[True]['appends']:,.0f}/s ({found[True]['reads']:,.0f} reads/s), "
                f"ratio {ratios[-1]:.3f}  (load {_load()})",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)

    def median(reader: bool, key: str) -> float:
        return statistics.median(r[key] for r in rounds[reader])

    print(
        f"reader: {args.reader}, batches of {args.batch}, "
        f"{args.pairs} pairs of {args.seconds:.0f} s rounds, {appender.appended:,} appended"
    )
    print(f"load average before: {load_before}; after: {_load()}; cores: {os.cpu_count()}")
    print(
        f"layout: {args.layout}; service nice value: {service_nice} (appender: "
        f"{os.getpriority(os.PRIO_PROCESS, 0)}; reader client: "
        f"{'as the appender' if args.reader_nice is None else args.reader_nice}; read server: "
        f"{read_nice if args.layout == 'split' else 'none'}"
        f"{', SCHED_IDLE (both)' if args.layout == 'split' and args.read_sched == 'idle' else ''}"
        "; read rate: "
        f"{'default' if args.read_rate is None else args.read_rate})"
    )
    for reader_on, name in ((False, "without reader"), (True, "with reader")):
        print(
            f"{name:>14}: appends/s median {median(reader_on, 'appends'):,.0f}; CPU (cores) "
            f"service {median(reader_on, 'server_cpu'):.2f}, "
            f"read server {median(reader_on, 'read_server_cpu'):.2f}, "
            f"appender {median(reader_on, 'client_cpu'):.2f}, "
            f"reader {median(reader_on, 'reader_cpu'):.2f}"
        )
    print(f"reader entries/s: median {median(True, 'reads'):,.0f}")
    print(f"per-pair ratios: {' '.join(f'{r:.3f}' for r in ratios)}")
    ratio = statistics.median(ratios)
    verdict = "met" if ratio >= 0.90 else "NOT met"
    print(f"median ratio with/without: {ratio:.3f}  (target >= 0.90: {verdict})")
    print(f"ratio of medians: {median(True, 'appends') / median(False, 'appends'):.3f}")


if __name__ == "__main__":
    main()
