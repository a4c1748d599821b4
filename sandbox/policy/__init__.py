"""Policy decisions: Rego policies evaluated by an embedded or an OPA engine.

Both engines run the same files (``policies/``) and return the same
:class:`Decision`; see :mod:`sandbox.policy.model` for the input fields.

Example::

    from sandbox.policy import EmbeddedEngine, PolicySet

    engine = EmbeddedEngine(PolicySet.from_directory())
    decision = engine.decide(policy_input)
    if not decision.allow:
        for violation in decision.violations:
            print(violation.code, violation.msg)
"""

from __future__ import annotations

from sandbox.policy.embedded import EmbeddedEngine
from sandbox.policy.engine import (
    CODE_DECISION_MALFORMED,
    CODE_DECISION_UNDEFINED,
    CODE_ENGINE_ERROR,
    CODE_ENGINE_TIMEOUT,
    CODE_ENGINE_UNAVAILABLE,
    PolicyEngine,
)
from sandbox.policy.manifests import Manifests, build_input, load_manifests
from sandbox.policy.model import (
    ACTIONS,
    ClusterFacts,
    DatasetFacts,
    Decision,
    ExportRequest,
    Obligation,
    PolicyInput,
    PolicyWarning,
    SandboxClaim,
    TenantFacts,
    Violation,
)
from sandbox.policy.opa import OpaEngine
from sandbox.policy.policyset import (
    ACTION_RULES,
    DEFAULT_POLICY_DIR,
    CustomPolicy,
    PolicyLoadError,
    PolicySet,
    SourceProblem,
)
from sandbox.policy.regotest import Outcome, TestResult, run_tests

__all__ = [
    "ACTIONS",
    "ACTION_RULES",
    "CODE_DECISION_MALFORMED",
    "CODE_DECISION_UNDEFINED",
    "CODE_ENGINE_ERROR",
    "CODE_ENGINE_TIMEOUT",
    "CODE_ENGINE_UNAVAILABLE",
    "DEFAULT_POLICY_DIR",
    "ClusterFacts",
    "CustomPolicy",
    "DatasetFacts",
    "Decision",
    "EmbeddedEngine",
    "ExportRequest",
    "Manifests",
    "Obligation",
    "OpaEngine",
    "Outcome",
    "PolicyEngine",
    "PolicyInput",
    "PolicyLoadError",
    "PolicySet",
    "PolicyWarning",
    "SandboxClaim",
    "SourceProblem",
    "TenantFacts",
    "TestResult",
    "Violation",
    "build_input",
    "load_manifests",
    "run_tests",
]
