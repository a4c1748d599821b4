"""Decision latency of the policy engines, per action: p50 and p99.

Targets (issue 4): p99 <= 1 ms embedded, <= 3 ms through an OPA server on loopback.
Each sample is one full ``engine.decide()`` call (input conversion, evaluation,
decision parsing), with the shipped policies loaded, over inputs built from the
examples (compliant and violating). The embedded engine's input cache is off unless
``--input-cache N`` is given, so every sample pays for converting its input (the
benchmark cycles over a handful of documents, which a cache would always hit).

    .venv/bin/python bench/policy_latency.py [--quick | --iterations N]
        [--input-cache N] [--opa PATH | --opa-url URL | --no-opa]

``--quick`` runs 300 decisions per row (about 10 s with OPA) instead of 2000. The OPA
server started here runs with the chart sidecar's Go settings (:data:`OPA_SIDECAR_ENV`).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from sandbox.policy import (
    ClusterFacts,
    EmbeddedEngine,
    OpaEngine,
    PolicyEngine,
    PolicySet,
    build_input,
    load_manifests,
)
from sandbox.policy.opa import OPA_SIDECAR_ENV

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

SCENARIOS: dict[str, list[tuple[list[str], str]]] = {
    "sandbox.provision": [
        (["finance/tenant.yaml", "finance/datasets.yaml", "finance/sandbox-fraud-model.yaml"], ""),
        (["finance/tenant.yaml", "finance/datasets.yaml", "finance/sandbox-violating.yaml"], ""),
        (["health/tenant.yaml", "health/datasets.yaml", "health/sandbox-sepsis-model.yaml"], ""),
        (["public/tenant.yaml", "public/datasets.yaml", "public/sandbox-violating.yaml"], ""),
    ],
    "dataset.grant": [
        (["finance/tenant.yaml", "finance/datasets.yaml", "finance/sandbox-fraud-model.yaml"], ""),
        (
            [
                "health/tenant-no-permit.yaml",
                "health/datasets.yaml",
                "health/sandbox-sepsis-model.yaml",
            ],
            "",
        ),
    ],
    "model.export": [
        (
            [
                "health/tenant.yaml",
                "health/datasets.yaml",
                "health/sandbox-sepsis-model.yaml",
                "health/export-model.yaml",
            ],
            "",
        ),
        (
            [
                "health/tenant.yaml",
                "health/datasets.yaml",
                "health/sandbox-sepsis-model.yaml",
                "health/export-violating.yaml",
            ],
            "",
        ),
    ],
}


def inputs_for(action: str) -> list[dict[str, Any]]:
    """The policy inputs of one action, as the engines receive them."""
    documents = []
    for files, _ in SCENARIOS[action]:
        manifests = load_manifests([EXAMPLES / f for f in files])
        region = str(manifests.sandboxes[0]["spec"]["region"])
        cluster = ClusterFacts.model_validate(
            {"region": region, "keys": {"region": region}, "audit": {"retentionDays": 1826}}
        )
        documents.append(build_input(manifests, cluster, action=action, now=NOW).to_rego())
    return documents


def measure(engine: PolicyEngine, documents: list[dict[str, Any]], iterations: int) -> list[float]:
    """Latencies in milliseconds of ``iterations`` decisions, cycling over ``documents``."""
    for document in documents * 20:
        engine.decide(document)
    samples = []
    for i in range(iterations):
        document = documents[i % len(documents)]
        started = time.perf_counter()
        decision = engine.decide(document)
        samples.append((time.perf_counter() - started) * 1000)
        if decision.violations and decision.violations[0].code.startswith("POLICY_ENGINE"):
            raise SystemExit(f"engine failed: {decision.violations[0].msg}")
    return samples


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_opa(binary: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``opa run --server`` on a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(binary), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **OPA_SIDECAR_ENV},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return process, url
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("OPA did not start")


def main() -> None:
    """Run the benchmark and print one line per engine and action."""
    default_opa = Path(os.environ.get("REGSANDBOX_BIN_DIR", Path.home() / ".cache/regsandbox/bin"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="300 decisions per row")
    parser.add_argument(
        "--input-cache", type=int, default=0, help="embedded engine input cache size"
    )
    parser.add_argument("--opa", type=Path, default=default_opa / "opa-v1.22.3")
    parser.add_argument("--opa-url", default=None)
    parser.add_argument("--no-opa", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.iterations = 300

    policy_set = PolicySet.from_directory(ROOT / "policies")
    engines: list[PolicyEngine] = [EmbeddedEngine(policy_set, input_cache=args.input_cache)]
    process = None
    if not args.no_opa:
        url = args.opa_url
        if url is None:
            process, url = start_opa(args.opa)
        engines.append(OpaEngine(url, policy_set))
    python = sys.version.split()[0]
    print(
        f"policy {policy_set.digest}; {args.iterations} decisions per row; python {python}; "
        f"input cache {args.input_cache}; load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'engine':<9} {'action':<18} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    try:
        for engine in engines:
            for action in SCENARIOS:
                samples = measure(engine, inputs_for(action), args.iterations)
                print(
                    f"{engine.name:<9} {action:<18} {percentile(samples, 0.50):>8.3f} "
                    f"{percentile(samples, 0.99):>8.3f} {statistics.fmean(samples):>8.3f}"
                )
    finally:
        for engine in engines:
            engine.close()
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
