"""Benchmark the local control plane: warm ``dev up`` to ready, and ``dev down``.

    .venv/bin/python bench/devenv_up.py [--runs 5]
    .venv/bin/python bench/devenv_up.py --cold-build   # also times a cold tool build

``--cold-build`` builds every pinned tool into a fresh cache with an empty Go build
cache (the Go module cache is kept: downloads are not what is measured). It takes
many minutes on two cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sandbox.devenv.controlplane import SERVERS, ControlPlane
from sandbox.devenv.processes import processes_under
from sandbox.devenv.toolchain import TOOLS, build_tools


def cold_build() -> dict[str, float]:
    """Build every tool from an empty Go build cache; seconds per tool."""
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as bins, tempfile.TemporaryDirectory() as gocache:
        os.environ["REGSANDBOX_BIN_DIR"] = bins
        os.environ["GOCACHE"] = gocache
        for name in TOOLS:
            started = time.monotonic()
            build_tools([name], progress=lambda _m: None)
            timings[name] = time.monotonic() - started
            print(f"cold build {name}: {timings[name]:.0f} s", flush=True)
        del os.environ["REGSANDBOX_BIN_DIR"], os.environ["GOCACHE"]
    return timings


def up_down(runs: int) -> tuple[list[float], list[float]]:
    """Time ``up`` (to ready, controllers working) and ``down`` (no process left)."""
    ups: list[float] = []
    downs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            plane = ControlPlane(Path(tmp) / "cp")
            started = time.monotonic()
            plane.up()
            ups.append(time.monotonic() - started)
            started = time.monotonic()
            plane.down()
            downs.append(time.monotonic() - started)
            assert processes_under(plane.directory, SERVERS) == {}
    return ups, downs


def main() -> None:
    """Run the benchmark and print a Markdown table row per measurement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold-build", action="store_true")
    args = parser.parse_args()
    if args.cold_build:
        timings = cold_build()
        print(f"| cold build, all tools | {sum(timings.values()):.0f} s |")
    ups, downs = up_down(args.runs)
    for label, values in (("warm dev up to ready", ups), ("dev down", downs)):
        print(
            f"| {label} ({args.runs} runs) | median {statistics.median(values):.2f} s, "
            f"max {max(values):.2f} s |"
        )


if __name__ == "__main__":
    main()
