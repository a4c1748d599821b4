"""The OPA engine: an OPA server or sidecar.

Loading goes through ``opa-python-client``: the engine checks the server's health,
pushes the data documents (``PUT /v1/data/<key>``, removing top-level keys the
previous set had and this one lacks) and every module
(``PUT /v1/policies/regsandbox/<path>``). If the server rejects the new set, the
modules and data it replaced are put back, so a bad policy set never replaces a good
one.

Decisions go through one persistent :class:`http.client.HTTPConnection` (HTTP/1.1
keep-alive, reopened once if the server closed it), which costs about half of an
``httpx`` and a third of a ``requests`` round trip: ``POST /v1/data/main/<rule>`` for the
per-action rule of the input's action (``main/decision`` for other actions or when
the set defines no per-action rules). If the server restarted and lost the policies,
they are pushed again before the decision is retried once.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient
from opa_client.errors import RegoParseError

from sandbox.policy.engine import (
    CODE_ENGINE_ERROR,
    CODE_ENGINE_TIMEOUT,
    CODE_ENGINE_UNAVAILABLE,
    DEFAULT_TIMEOUT,
    EvaluationError,
    PolicyEngine,
)
from sandbox.policy.policyset import PolicyLoadError, PolicySet, SourceProblem

__all__ = ["DECISION_PATH", "DEFAULT_OPA_URL", "OPA_SIDECAR_ENV", "POLICY_ID_PREFIX", "OpaEngine"]

DEFAULT_OPA_URL = "http://127.0.0.1:8181"

OPA_SIDECAR_ENV: Mapping[str, str] = {"GOMAXPROCS": "1", "GOGC": "400", "GOMEMLIMIT": "200MiB"}
"""Go runtime settings the chart gives the OPA sidecar (one thread for its half-CPU
limit, a larger GC target bounded by its memory limit); a chart test keeps them equal."""
"""Where an OPA sidecar listens by default."""

DECISION_PATH = "/v1/data/main/decision"
"""Where ``data.main.decision`` is read."""

POLICY_ID_PREFIX = "regsandbox/"
"""Prefix of the policy ids this engine owns on the server."""


class OpaEngine(PolicyEngine):
    """Evaluate decisions on an OPA server.

    Example::

        with OpaEngine("http://127.0.0.1:8181", PolicySet.from_directory()) as engine:
            decision = engine.decide(policy_input)
    """

    name = "opa"

    def __init__(
        self,
        url: str = DEFAULT_OPA_URL,
        policy_set: PolicySet | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
    ) -> None:
        super().__init__(timeout=timeout)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid OPA URL {url!r}: expected http(s)://host:port")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if self._https else 8181))
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._connection: http.client.HTTPConnection | None = None
        self._paths: Mapping[str, str] = {}
        self._client = OpaClient(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 8181),
            ssl=parts.scheme == "https",
            token=token,
            retries=0,
            timeout=timeout,
        )
        if policy_set is not None:
            self.load(policy_set)

    def healthy(self) -> bool:
        """Whether the server answers its ``/health`` endpoint."""
        return bool(self._client.check_health())

    def close(self) -> None:
        """Close the HTTP connections."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._client.close_connection()

    # --- loading ---------------------------------------------------------------------

    def _install(self, policy_set: PolicySet) -> None:
        if not self.healthy():
            raise PolicyLoadError(f"OPA server at {self.url} is not healthy or unreachable")
        try:
            previous = self._server_state()
        except requests.RequestException as exc:
            raise PolicyLoadError(f"OPA server at {self.url} failed: {exc}") from exc
        try:
            self._push(policy_set.modules, policy_set.data, previous[0])
            for key in previous[1]:
                if key not in policy_set.data:
                    self._client.delete_data(key)
        except (PolicyLoadError, requests.RequestException) as exc:
            self._restore(*previous)
            if isinstance(exc, PolicyLoadError):
                raise
            raise PolicyLoadError(f"OPA server at {self.url} failed: {exc}") from exc
        self._paths = {
            action: "/v1/data/" + entrypoint
            for action, entrypoint in policy_set.action_entrypoints.items()
        }

    def _server_state(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Our modules and data currently on the server, to restore on failure."""
        modules: dict[str, str] = {}
        for policy_id in self._client.get_policies_list():
            if policy_id.startswith(POLICY_ID_PREFIX):
                raw = self._client.get_policy(policy_id).get("result", {}).get("raw", "")
                modules[policy_id.removeprefix(POLICY_ID_PREFIX)] = raw
        data: dict[str, Any] = {}
        if self._policy is not None:
            for key in self._policy.data:
                data[key] = self._client.get_data(key).get("result")
        return modules, data

    def _push(
        self, modules: Mapping[str, str], data: Mapping[str, Any], old: Mapping[str, str]
    ) -> None:
        for key, value in data.items():
            if not isinstance(value, dict):
                raise PolicyLoadError(f"top-level data key {key!r} must hold an object")
            self._client.update_or_create_data(value, key)
        pending = dict(modules)
        problems: list[SourceProblem] = []
        # OPA compiles all modules on every PUT, so a module calling a function of a
        # module not pushed yet fails; retry until no module makes progress.
        progressed = True
        while pending and progressed:
            problems, progressed = [], False
            for path in sorted(pending):
                try:
                    self._client.update_policy_from_string(
                        pending[path], POLICY_ID_PREFIX + path, rego_compat=False
                    )
                except RegoParseError as exc:
                    problems.extend(_opa_problems(exc, path))
                else:
                    del pending[path]
                    progressed = True
        if pending:
            raise PolicyLoadError("OPA rejected the policy set", problems)
        for path in old:
            if path not in modules:
                self._client.delete_policy(POLICY_ID_PREFIX + path)

    def _restore(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        """Put back what the server held before a failed load (best effort)."""
        try:
            for key, value in data.items():
                if isinstance(value, dict):
                    self._client.update_or_create_data(value, key)
            current = set(self._client.get_policies_list())
            for policy_id in current:
                path = policy_id.removeprefix(POLICY_ID_PREFIX)
                if policy_id.startswith(POLICY_ID_PREFIX) and path not in modules:
                    self._client.delete_policy(policy_id)
            for path, source in modules.items():
                self._client.update_policy_from_string(
                    source, POLICY_ID_PREFIX + path, rego_compat=False
                )
        except (RegoParseError, requests.RequestException):
            return

    # --- deciding --------------------------------------------------------------------

    def _evaluate(self, document: dict[str, Any]) -> Any:
        result = self._query(document)
        if result is None and self._policy is not None and not self._policies_present():
            self._push(self._policy.modules, self._policy.data, {})
            result = self._query(document)
        return result

    def _query(self, document: dict[str, Any]) -> Any:
        path = self._paths.get(str(document.get("action", "")), DECISION_PATH)
        body = b'{"input":' + json.dumps(document, separators=(",", ":")).encode() + b"}"
        try:
            status, content = self._post(path, body)
        except TimeoutError as exc:
            raise EvaluationError(
                CODE_ENGINE_TIMEOUT, f"no answer from {self.url} within {self.timeout}s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise EvaluationError(
                CODE_ENGINE_UNAVAILABLE, f"cannot reach {self.url}: {exc}"
            ) from exc
        if status != 200:
            raise EvaluationError(
                CODE_ENGINE_ERROR, f"{self.url} answered {status}: {content[:200]!r}"
            )
        return json.loads(content).get("result")

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST on the kept-alive connection, reconnecting once if it went stale."""
        for attempt in (1, 2):
            connection = self._connection
            if connection is None:
                host, port = self._address
                factory = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                connection = factory(str(host), port, timeout=self.timeout)
                self._connection = connection
            try:
                connection.request("POST", path, body=body, headers=self._headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()
                self._connection = None
                if attempt == 2:
                    raise
            except BaseException:
                connection.close()
                self._connection = None
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _policies_present(self) -> bool:
        try:
            ids = set(self._client.get_policies_list())
        except requests.RequestException:
            return True
        modules = self._policy.modules if self._policy else {}
        return {POLICY_ID_PREFIX + path for path in modules} <= ids


def _opa_problems(error: RegoParseError, path: str) -> list[SourceProblem]:
    problems = []
    for item in error.errors:
        if not isinstance(item, dict):
            continue
        location = item.get("location") or {}
        where = str(location.get("file") or path).removeprefix(POLICY_ID_PREFIX)
        row = int(location.get("row") or 1)
        problems.append(SourceProblem(where, row, str(item.get("message", ""))))
    return problems or [SourceProblem(path, 1, str(error.message))]
