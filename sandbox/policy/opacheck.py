"""Compile a policy set with the ``opa`` binary, to catch what regopy accepts but OPA refuses.

regopy (the embedded engine) misses some compile errors: a rule body using an unbound
variable, such as ``violations contains v if { y > 1; v := ... }``, loads and simply
never matches. For a custom ``deny`` policy that is an ineffective rule that looks
active. When an ``opa`` binary is available (the operator image ships one), the
embedded engine runs ``opa check`` on every policy set before it accepts it, and
refuses the set with OPA's messages, named by file and line.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from sandbox.policy.policyset import PolicyLoadError, SourceProblem

__all__ = ["OPA_CHECK_TIMEOUT", "opa_check"]

OPA_CHECK_TIMEOUT = 30.0
"""Seconds ``opa check`` may take before the set is refused."""


def opa_check(binary: Path, modules: Mapping[str, str]) -> None:
    """Compile ``modules`` with ``binary check`` (Rego v1, not strict).

    Raises:
        PolicyLoadError: naming each file and line OPA refused, or saying that the
            check itself could not run (a set that cannot be checked is not accepted).
    """
    with tempfile.TemporaryDirectory(prefix="regsandbox-opa-check-") as tmp:
        root = Path(tmp).resolve()
        for path, source in modules.items():
            target = root / path
            if root not in target.resolve().parents:
                raise PolicyLoadError(
                    "policy module path escapes the policy set",
                    [SourceProblem(path, 1, "module paths must be relative")],
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source, encoding="utf-8")
        try:
            result = subprocess.run(
                [str(binary), "check", "--format", "json", str(root)],
                capture_output=True,
                text=True,
                timeout=OPA_CHECK_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PolicyLoadError(
                f"cannot check the policies with {binary}: {type(exc).__name__}: {exc}"
            ) from exc
        if result.returncode == 0:
            return
        raise PolicyLoadError("policy does not compile", _problems(result, root))


def _problems(result: subprocess.CompletedProcess[str], root: Path) -> list[SourceProblem]:
    errors: list[dict[str, object]] = []
    for stream in (result.stderr, result.stdout):  # opa writes its JSON report to stderr
        try:
            errors = json.loads(stream or "{}").get("errors") or []
        except (json.JSONDecodeError, AttributeError):
            continue
        if errors:
            break
    problems = []
    for error in errors:
        location = error.get("location")
        if not isinstance(location, dict):
            location = {}
        file = str(location.get("file") or "")
        path = Path(file).relative_to(root).as_posix() if file.startswith(str(root)) else file
        problems.append(
            SourceProblem(path or "?", int(location.get("row") or 1), str(error.get("message")))
        )
    if not problems:
        text = (result.stderr or result.stdout or "opa check failed").strip().splitlines()
        problems.append(SourceProblem("?", 1, text[0] if text else "opa check failed"))
    return problems
