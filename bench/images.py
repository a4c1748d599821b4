"""Benchmark the data plane's local image builds: cold, warm, and after a code change.

    sudo .venv/bin/python bench/images.py [--warm-runs 5] [--skip-cold]

Cold: every image (pause, busybox, opa, regsandbox) into an empty image cache, the
Debian base of the regsandbox image included (mmdebstrap: needs root and the Debian
mirror; packages are downloaded again, pip's wheel cache is kept). Warm: the same
builds again, which must all be cache hits (the time is computing the content keys).
Code change: a copy of the checkout with one source file changed, so only the
regsandbox application layer (wheel, venv, policies, opa) is rebuilt on the cached base.
Each image's archive size is reported too. Nothing is written outside a temporary cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sandbox.devenv.images import IMAGES, build_image, content_key


def _timed_builds(repo: Path, messages: list[str]) -> dict[str, tuple[float, Path]]:
    results: dict[str, tuple[float, Path]] = {}
    for name in IMAGES:
        started = time.monotonic()
        archive = build_image(name, repo=repo, progress=messages.append)
        results[name] = (time.monotonic() - started, archive)
    return results


def _copy(repo: Path, into: Path, change: bool = False) -> Path:
    """The files the regsandbox image is made of, optionally with one source changed.

    Copies, so that edits in the working tree during the run cannot turn a warm build
    into a cold one.
    """
    into.mkdir(parents=True)
    for part in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(repo / part, into / part)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for part in ("sandbox", "operators", "audit", "policies"):
        shutil.copytree(repo / part, into / part, ignore=ignore)
    if change:
        with (into / "sandbox" / "errors.py").open("a") as handle:
            handle.write(f"\n# benchmark change {time.time_ns()}\n")
    return into


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--skip-cold", action="store_true", help="reuse the user's cache")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    repo = args.repo.resolve()

    with tempfile.TemporaryDirectory(prefix="regsandbox-bench-images-") as scratch:
        if not args.skip_cold:
            os.environ["REGSANDBOX_IMAGE_DIR"] = str(Path(scratch) / "cache")
        checkout = _copy(repo, Path(scratch) / "checkout")
        total = time.monotonic()
        messages: list[str] = []
        cold = _timed_builds(checkout, messages)
        base = next((m for m in messages if m.startswith("debian base: built in")), None)
        cold_total = time.monotonic() - total
        warm: list[float] = []
        for _ in range(args.warm_runs):
            started = time.monotonic()
            again = _timed_builds(checkout, [])
            warm.append(time.monotonic() - started)
            assert {n: a for n, (_, a) in again.items()} == {n: a for n, (_, a) in cold.items()}
        changed = _copy(repo, Path(scratch) / "changed", change=True)
        assert content_key("regsandbox", changed) != content_key("regsandbox", checkout)
        started = time.monotonic()
        build_image("regsandbox", repo=changed, progress=lambda _m: None)
        rebuild = time.monotonic() - started

        print(
            f"machine: {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}"
        )
        label = "cold" if not args.skip_cold else "first (user's cache)"
        print(f"\n| image | {label} build | archive size |\n|---|---|---|")
        for name, (seconds, archive) in cold.items():
            size = archive.stat().st_size / 2**20
            print(f"| {name} | {seconds:.1f} s | {size:.1f} MiB |")
        print(f"| all four | {cold_total:.1f} s | |")
        if base:
            seconds = base.split(" in ", 1)[1].split(" ->", 1)[0]
            print(f"\nof which the Debian base layer (mmdebstrap): {seconds}")
        print(
            f"\nwarm (all cache hits), {args.warm_runs} runs: median "
            f"{statistics.median(warm):.2f} s, max {max(warm):.2f} s"
        )
        print(f"regsandbox after a code change (base layer cached): {rebuild:.1f} s")


if __name__ == "__main__":
    main()
