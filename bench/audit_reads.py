"""Benchmark: do readers slow appends? Same service, same run, with and without a reader.

    python bench/audit_reads.py --seconds 20 --dir /tmp/audit-reads [--reader entries]

Starts ``sandboxctl audit serve`` (a separate process, as the chart runs it) on a fresh
log, fills it with ``--prefill`` entries, then measures durable appends through the HTTP
API (``AuditClient.append``, batches of ``--batch``) for ``--seconds``:

1. with no reader;
2. with one reader in another process paging through the whole log as fast as it can:
   ``entries`` (``GET /v1/entries`` ranges of 1,000), ``tenant`` (a tenant's pages, each
   entry with its inclusion proof) or ``tiles`` (C2SP entry bundles and hash tiles);
3. with no reader again (to see the machine's drift).

Reports appends/s for each phase and the ratio of phase 2 to the mean of 1 and 3; the
target is at least 0.90. Reads per second of the reader are reported too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from audit.client import AuditClient
from audit.service import token_digest
from audit.signing import generate_key_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_append import make_event

ORIGIN = "bench.regsandbox.example/reads"


def _reader(url: str, token: str, mode: str, stop: float, counter: multiprocessing.Value) -> None:  # type: ignore[type-arg]
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    reads = 0
    while time.monotonic() < stop:
        size = int(http.get("/v1/checkpoint").text.splitlines()[1])
        if mode == "entries":
            for start in range(0, size, 1000):
                if time.monotonic() >= stop:
                    break
                http.get("/v1/entries", params={"start": start, "end": min(size, start + 1000)})
                reads += min(size, start + 1000) - start
        elif mode == "tenant":
            after: int | None = 0
            while after is not None and time.monotonic() < stop:
                page = http.get(
                    "/v1/tenants/bank-a/entries", params={"start": after, "limit": 1000}
                )
                body = page.json()
                reads += len(body["entries"])
                after = body["next"]
        else:
            for n in range(size // 256):
                if time.monotonic() >= stop:
                    break
                http.get(f"/tlog/tile/entries/{_tile_index(n)}")
                http.get(f"/tlog/tile/0/{_tile_index(n)}")
                reads += 256
    counter.value = reads


def _tile_index(n: int) -> str:
    digits = f"{n:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


def _append_for(client: AuditClient, seconds: float, batch: int, rng: random.Random) -> float:
    appended = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        events = [make_event(rng) for _ in range(batch)]
        appended += len(client.append(events))
    return appended / (time.monotonic() - start)


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--prefill", type=int, default=200_000)
    parser.add_argument("--reader", choices=["entries", "tenant", "tiles"], default="entries")
    parser.add_argument("--port", type=int, default=18090)
    args = parser.parse_args()

    args.dir.mkdir(parents=True, exist_ok=False)
    log = args.dir / "log"
    key = args.dir / "log.key"
    generate_key_file(key, ORIGIN)
    subprocess.run(
        ["sandboxctl", "audit", "init", "--log", str(log), "--origin", ORIGIN, "--key", str(key)],
        check=True,
        capture_output=True,
    )
    writer, reader = secrets.token_hex(16), secrets.token_hex(16)
    (args.dir / "writers").write_text(f"{token_digest(writer)} bench-writer\n")
    (args.dir / "readers").write_text(f"{token_digest(reader)} bench-reader\n")
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(
        [
            "sandboxctl", "audit", "serve", "--log", str(log), "--key", str(key),
            "--writers", str(args.dir / "writers"), "--readers", str(args.dir / "readers"),
            "--listen", f"127.0.0.1:{args.port}",
        ]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the audit service did not start")
            time.sleep(0.1)
        rng = random.Random(7)
        with AuditClient(url, writer, timeout=60) as client:
            for _ in range(0, args.prefill, 1000):
                client.append([make_event(rng) for _ in range(1000)])
            time.sleep(1.5)  # let a checkpoint cover the prefill
            alone = _append_for(client, args.seconds, args.batch, rng)
            counter = multiprocessing.Value("q", 0)
            stop = time.monotonic() + args.seconds
            proc = multiprocessing.Process(
                target=_reader, args=(url, reader, args.reader, stop, counter)
            )
            proc.start()
            with_reader = _append_for(client, args.seconds, args.batch, rng)
            proc.join()
            again = _append_for(client, args.seconds, args.batch, rng)
    finally:
        server.terminate()
        server.wait(timeout=30)
    baseline = (alone + again) / 2
    print(f"reader: {args.reader}, batches of {args.batch}, {args.seconds:.0f} s per phase")
    print(f"appends/s without reader: {alone:,.0f} then {again:,.0f}")
    print(f"appends/s with reader:    {with_reader:,.0f}")
    print(f"reader entries/s:         {counter.value / args.seconds:,.0f}")
    print(f"ratio with/without:       {with_reader / baseline:.3f}  (target >= 0.90)")


if __name__ == "__main__":
    main()
