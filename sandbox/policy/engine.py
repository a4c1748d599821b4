"""The engine interface shared by the embedded and the OPA engine.

An engine holds one loaded :class:`~sandbox.policy.policyset.PolicySet` and answers
decisions with it. It never raises from :meth:`PolicyEngine.decide`: an error, a
timeout, an undefined or malformed decision, or no policy at all becomes a deny
whose single violation says why (fail closed). A policy set that fails to load
never replaces the one already loaded.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from pydantic import ValidationError

from sandbox.policy.model import Decision, PolicyInput
from sandbox.policy.policyset import CUSTOM_MODULE_DIR, PolicyLoadError, PolicySet

__all__ = [
    "CODE_DECISION_MALFORMED",
    "CODE_DECISION_UNDEFINED",
    "CODE_ENGINE_ERROR",
    "CODE_ENGINE_TIMEOUT",
    "CODE_ENGINE_UNAVAILABLE",
    "DEFAULT_TIMEOUT",
    "EvaluationError",
    "PolicyEngine",
]

CODE_ENGINE_UNAVAILABLE = "POLICY_ENGINE_UNAVAILABLE"
"""No policy set is loaded, or the engine cannot be reached."""
CODE_ENGINE_ERROR = "POLICY_ENGINE_ERROR"
"""The engine failed while evaluating."""
CODE_ENGINE_TIMEOUT = "POLICY_ENGINE_TIMEOUT"
"""The engine did not answer within the timeout."""
CODE_DECISION_UNDEFINED = "POLICY_DECISION_UNDEFINED"
"""The entry point evaluated to nothing."""
CODE_DECISION_MALFORMED = "POLICY_DECISION_MALFORMED"
"""The entry point returned something that is not a decision."""

DEFAULT_TIMEOUT = 1.0
"""Seconds a decision may take before it is denied."""


class EvaluationError(Exception):
    """Raised inside an engine to turn the current decision into a deny.

    ``code`` is one of the ``CODE_*`` constants of this module.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _name_custom_policies(error: PolicyLoadError) -> PolicyLoadError:
    """``error`` with the SandboxPolicies whose modules it points at named first."""
    prefix = CUSTOM_MODULE_DIR + "/"
    names = sorted(
        {
            p.path.removeprefix(prefix).removesuffix(".rego")
            for p in error.problems
            if p.path.startswith(prefix)
        }
    )
    if not names:
        return error
    message = str(error).split("\n", 1)[0]
    return PolicyLoadError(f"SandboxPolicy {', '.join(names)}: {message}", error.problems)


class PolicyEngine(ABC):
    """One way of evaluating the regsandbox policies.

    Subclasses implement :meth:`_install` (make a policy set current, or raise
    :class:`PolicyLoadError` and leave the old one in place) and :meth:`_evaluate`
    (return the raw value of ``data.main.decision``, ``None`` when undefined).
    """

    name: str = "engine"
    """Short name shown to users (``embedded``, ``opa``)."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._policy: PolicySet | None = None
        self._digest = ""
        self._load_error: str | None = None
        self._lock = threading.Lock()

    @property
    def policy_digest(self) -> str:
        """Digest of the loaded policy set, ``""`` when none is loaded."""
        return self._digest

    @property
    def policy_set(self) -> PolicySet | None:
        """The loaded policy set, if any."""
        return self._policy

    def load(self, policy_set: PolicySet) -> None:
        """Make ``policy_set`` the one decisions use.

        Nothing is done when the set's digest equals the loaded one.

        Raises:
            PolicyLoadError: if the set does not compile or cannot run on this
                engine; the previously loaded set stays in use.
        """
        digest = policy_set.digest
        with self._lock:
            if digest == self._digest:
                return
            try:
                self._install(policy_set)
            except PolicyLoadError as exc:
                exc = _name_custom_policies(exc)
                self._load_error = str(exc)
                raise exc from exc.__cause__
            self._policy, self._digest, self._load_error = policy_set, digest, None

    def decide(self, policy_input: PolicyInput | dict[str, Any]) -> Decision:
        """Evaluate the decision for ``policy_input``; never raises (fail closed)."""
        document = policy_input.to_rego() if isinstance(policy_input, PolicyInput) else policy_input
        with self._lock:
            digest = self._digest
            if self._policy is None:
                reason = self._load_error or "no policy set is loaded"
                return Decision.deny(
                    CODE_ENGINE_UNAVAILABLE, f"{self.name} engine: {reason}", digest
                )
            started = time.monotonic()
            try:
                value = self._evaluate(document)
            except EvaluationError as exc:
                return Decision.deny(exc.code, f"{self.name} engine: {exc}", digest)
            except Exception as exc:  # any engine failure must deny
                return Decision.deny(
                    CODE_ENGINE_ERROR,
                    f"{self.name} engine failed: {type(exc).__name__}: {exc}",
                    digest,
                )
            elapsed = time.monotonic() - started
        if elapsed > self.timeout:
            return Decision.deny(
                CODE_ENGINE_TIMEOUT,
                f"{self.name} engine took {elapsed:.3f}s, more than the {self.timeout}s allowed",
                digest,
            )
        if value is None:
            return Decision.deny(
                CODE_DECISION_UNDEFINED,
                f"{self.name} engine: data.main.decision is undefined for this input",
                digest,
            )
        try:
            return Decision.from_rego(value, digest)
        except ValidationError as exc:
            return Decision.deny(
                CODE_DECISION_MALFORMED,
                f"{self.name} engine: data.main.decision is not a decision: "
                f"{exc.error_count()} problem(s)",
                digest,
            )

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing
        """Release what the engine holds (connections, interpreters)."""

    def __enter__(self) -> PolicyEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def _install(self, policy_set: PolicySet) -> None:
        """Compile or push ``policy_set``; raise :class:`PolicyLoadError` on failure."""

    @abstractmethod
    def _evaluate(self, document: dict[str, Any]) -> Any:
        """Return the raw value of ``data.main.decision`` for ``document``, or ``None``."""
