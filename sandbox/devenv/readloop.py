"""A workload pod that reads through the gateway without pause, for availability checks.

:class:`ReadLoop` runs a small Python loop inside a sandbox's pod (``kubectl exec``):
one GET after another through the gateway Service, each on a new connection as a naive
client would, each answer one JSON line — sequence number, the pod's monotonic time,
status, ``X-Request-Id``, SHA-256 of the body, the refusal's reason. The loop stops when
the exec's stdin closes (:meth:`ReadLoop.stop`), so it never outlives its caller.

:func:`outages` turns the answers into the gaps a reader saw: runs of answers that were
not 200, with their length and duration. The data-plane test (tests/dataplane) and the
benchmark (``bench/gateway_audit_ha.py``) kill a gateway or the audit service while a
loop runs and judge with these.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["Answer", "Outage", "ReadLoop", "outages"]

# Runs in the pod with the image's Python; argv: url, token file, seconds per request.
_LOOP = """
import hashlib, json, os, select, sys, time, urllib.error, urllib.request
url, token_file, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
n = 0
while True:
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    if ready and not os.read(sys.stdin.fileno(), 1):
        break
    token = open(token_file).read().strip()
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    start = time.monotonic()
    rid, reason, body = "", "", b""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
            rid = response.headers.get("X-Request-Id", "")
    except urllib.error.HTTPError as exc:
        status, rid = exc.code, exc.headers.get("X-Request-Id", "")
        try:
            reason = json.loads(exc.read() or b"{}").get("reason", "")
        except ValueError:
            reason = "unparsable"
    except OSError as exc:
        status, reason = 0, type(exc).__name__ + ": " + str(exc)[:200]
    n += 1
    print(json.dumps({"n": n, "t": start, "took": time.monotonic() - start, "status": status,
                      "rid": rid, "reason": reason,
                      "sha256": hashlib.sha256(body).hexdigest() if status == 200 else ""}),
          flush=True)
"""


@dataclass(frozen=True)
class Answer:
    """One answer the loop got."""

    n: int
    """Sequence number (from 1)."""
    t: float
    """When the request was sent, on the pod's monotonic clock (seconds)."""
    took: float
    """Seconds until the answer (or the failure)."""
    status: int
    """HTTP status; 0 when no answer came (connection refused, reset, timeout)."""
    request_id: str
    """The answer's ``X-Request-Id`` (the id in the audit entries), or empty."""
    reason: str
    """The refusal's reason code, or the connection error."""
    sha256: str
    """SHA-256 of a 200's body."""


@dataclass(frozen=True)
class Outage:
    """A run of answers that were not 200, between two that were (or the loop's ends)."""

    first: int
    """Sequence number of its first failed answer."""
    failed: int
    """How many answers in it failed."""
    seconds: float
    """From the last 200 before it to the first 200 after it (the gap a reader saw)."""
    statuses: tuple[int, ...]
    """The distinct statuses in it."""


class ReadLoop:
    """GET ``url`` in a loop from inside ``namespace``/``pod`` until :meth:`stop`."""

    def __init__(
        self,
        kubectl: Path,
        kubeconfig: Path,
        namespace: str,
        pod: str,
        url: str,
        token_file: str,
        *,
        request_timeout: float = 15.0,
    ) -> None:
        """Prepare the loop (:meth:`start` runs it)."""
        self._argv = [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "exec",
            "-i",
            "-n",
            namespace,
            pod,
            "--",
            "python3",
            "-u",
            "-c",
            _LOOP,
            url,
            token_file,
            str(request_timeout),
        ]
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._errors = b""

    def start(self) -> ReadLoop:
        """Start the loop in the pod; returns self."""
        self._proc = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=self._collect, args=(self._proc.stdout,), daemon=True
        )
        self._reader.start()
        return self

    def _collect(self, lines: IO[bytes]) -> None:
        for line in lines:
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            answer = Answer(
                int(raw["n"]),
                float(raw["t"]),
                float(raw["took"]),
                int(raw["status"]),
                str(raw["rid"]),
                str(raw["reason"]),
                str(raw["sha256"]),
            )
            with self._lock:
                self._answers.append(answer)

    @property
    def answers(self) -> list[Answer]:
        """The answers so far, in order."""
        with self._lock:
            return list(self._answers)

    def running(self) -> bool:
        """Whether the exec is still running."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 30.0) -> list[Answer]:
        """Close the loop's stdin (it ends after the request under way); all answers."""
        proc = self._proc
        if proc is None:
            return self.answers
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        if proc.stderr is not None:
            self._errors = proc.stderr.read()
        return self.answers

    @property
    def errors(self) -> str:
        """What ``kubectl exec`` wrote on stderr (after :meth:`stop`)."""
        return self._errors.decode(errors="replace")


def outages(answers: list[Answer]) -> list[Outage]:
    """The runs of non-200 answers in ``answers``, each with the gap a reader saw."""
    found: list[Outage] = []
    last_ok: float | None = None
    run: list[Answer] = []
    for answer in answers:
        if answer.status != 200:
            run.append(answer)
            continue
        if run:
            start = last_ok if last_ok is not None else run[0].t
            found.append(_outage(run, answer.t - start))
            run = []
        last_ok = answer.t + answer.took
    if run:
        start = last_ok if last_ok is not None else run[0].t
        found.append(_outage(run, run[-1].t + run[-1].took - start))
    return found


def _outage(run: list[Answer], seconds: float) -> Outage:
    return Outage(run[0].n, len(run), seconds, tuple(sorted({a.status for a in run})))
