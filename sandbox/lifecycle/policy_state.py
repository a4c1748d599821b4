"""The operator's one piece of mutable shared state: the policy set in force.

Handlers run in parallel threads. Two SandboxPolicies created at once are reconciled
at once, and each load replaces the engine's whole set; if each built its set from
what the API server shows (others' ``status.accepted``, not written yet), the second
load would drop the first policy while its status says Accepted. So the set is
changed only here, under one lock, from the policies this process put in force — a
policy is in :attr:`PolicyState.in_force` from the moment its load succeeds, before
its status is written.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping

from sandbox.policy.engine import PolicyEngine
from sandbox.policy.policyset import CustomPolicy, PolicyLoadError, PolicySet

__all__ = ["PolicyState"]

_RELOAD_SECONDS = 5.0
"""How often an engine that did not take the policies is offered them again."""


class PolicyState:
    """The built-in policies, the SandboxPolicies in force, and the set the engine must hold.

    Every change goes through :meth:`change` under one lock; readers only compare
    digests (:meth:`ensure_loaded`).
    """

    def __init__(self, base: PolicySet | None, current: PolicySet | None = None) -> None:
        self._lock = threading.Lock()
        self._base = base
        self._current = current
        self._in_force: dict[str, CustomPolicy] = {}
        self._next_load = 0.0

    @property
    def current(self) -> PolicySet | None:
        """The policy set the engine should hold."""
        return self._current

    @property
    def in_force(self) -> Mapping[str, CustomPolicy]:
        """SandboxPolicies this process has put in force, by name (a copy)."""
        with self._lock:
            return dict(self._in_force)

    def change(
        self,
        engine: PolicyEngine,
        name: str,
        policy: CustomPolicy | None,
        listed: Mapping[str, CustomPolicy],
    ) -> str:
        """Put ``policy`` in force as ``name`` (None: drop it); return the new digest.

        ``listed`` is every SandboxPolicy's version in force as the API server shows
        it; what this process loaded since wins over it. The engine loads the whole
        set atomically: on :class:`PolicyLoadError` nothing changes.
        """
        with self._lock:
            if self._base is None:
                raise PolicyLoadError("the operator has no built-in policy set loaded")
            merged = {**listed, **self._in_force}
            merged.pop(name, None)
            if policy is not None:
                merged[name] = policy
            candidate = self._base.with_custom([merged[n] for n in sorted(merged)])
            engine.load(candidate)
            self._in_force = merged
            self._current = candidate
            return candidate.digest

    def ensure_loaded(self, engine: PolicyEngine) -> None:
        """(Re)load :attr:`current` into the engine if it does not hold it yet.

        An engine that was unreachable at start-up is retried at most every 5 seconds;
        until it takes the policies, every decision is a deny that says why.
        """
        current = self._current
        if current is None or engine.policy_digest == current.digest:
            return
        with self._lock:
            current, now = self._current, time.monotonic()
            if current is None or now < self._next_load or engine.policy_digest == current.digest:
                return
            self._next_load = now + _RELOAD_SECONDS
            with contextlib.suppress(Exception):  # the engine records why; decide() says it
                engine.load(current)
