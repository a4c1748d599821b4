"""The embedded engine: regopy (rego-cpp) in-process, no server.

A policy set is compiled once into a regopy bundle whose entry points are
``main/decision`` and the per-action rules (``main/sandbox_provision``, ...; see
:data:`~sandbox.policy.policyset.ACTION_RULES`); a decision queries the entry point
of its action, so only the packages that can apply to it are evaluated. Decisions
reuse that bundle and one interpreter, and the set is recompiled only when its
digest changes. The converted input of the last few distinct documents is cached.

At load time the engine refuses a set that:

* does not parse or compile (the error names the file and line);
* calls a function that is neither defined in the set nor a builtin regopy
  implements (regopy would otherwise leave every rule that calls it undefined);
* leaves ``data.main.decision`` undefined for an empty input;
* defines one function name with different arities in different packages, on which
  regopy aborts the process (see :func:`~sandbox.policy.policyset.arity_conflicts`).

Results are read through regopy's C API rather than :class:`regopy.Output`: regopy
1.5 writes strings into its JSON output without escaping them, so a string holding a
quote, backslash or newline makes that JSON invalid. The engine parses the JSON when
it is valid and otherwise walks the result nodes (:func:`node_value`).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import regopy
from regopy import rego_shared as _capi
from regopy.rego_shared import NodeKind

from sandbox.policy.engine import CODE_ENGINE_ERROR, DEFAULT_TIMEOUT, EvaluationError, PolicyEngine
from sandbox.policy.opacheck import opa_check
from sandbox.policy.policyset import (
    PolicyLoadError,
    PolicySet,
    SourceProblem,
    arity_conflicts,
    find_calls,
)

__all__ = [
    "ENTRYPOINT",
    "EmbeddedEngine",
    "compile_problems",
    "make_input",
    "new_interpreter",
    "node_value",
    "query_entrypoint",
    "unsupported_calls",
]

ENTRYPOINT = "main/decision"
"""The bundle entry point matching :data:`~sandbox.policy.policyset.DECISION_QUERY`."""

_ERROR = re.compile(
    r"\(error \d+:(?P<path>[^|\s]+)\|(?P<offset>\d+)\|\d+\s*"
    r"\(errormsg \d+:(?P<message>[^\n]*?)\)\s*$",
    re.MULTILINE,
)


def compile_problems(
    error: Exception, sources: Mapping[str, str], fallback_path: str
) -> list[SourceProblem]:
    """Turn a regopy compile error into problems naming file and line.

    regopy raises its error tree as text, each error as
    ``(error <n>:<path>|<byte offset>|<length> (errormsg <n>:<message>) ...)``; the
    byte offset is turned into a line of ``sources[path]``. Without a location the
    whole text is attributed to ``fallback_path`` line 1.
    """
    problems: list[SourceProblem] = []
    for match in _ERROR.finditer(str(error)):
        path = match["path"]
        source = sources.get(path, "").encode()
        line = source[: int(match["offset"])].count(b"\n") + 1
        problem = SourceProblem(path, line, match["message"].strip())
        if problem not in problems:
            problems.append(problem)
    if not problems:
        first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "error")
        problems.append(SourceProblem(fallback_path, 1, first))
    return problems


def new_interpreter(modules: Mapping[str, str], data: Mapping[str, Any]) -> regopy.Interpreter:
    """An interpreter holding ``data`` and ``modules``.

    Raises:
        PolicyLoadError: if a module does not parse or compile.
    """
    interpreter = regopy.Interpreter()
    interpreter.add_data_json(json.dumps(data))
    for path in sorted(modules):
        try:
            interpreter.add_module(path, modules[path])
        except regopy.RegoError as exc:
            raise PolicyLoadError(
                "policy does not compile", compile_problems(exc, modules, path)
            ) from exc
    return interpreter


def unsupported_calls(
    interpreter: regopy.Interpreter, modules: Mapping[str, str]
) -> list[SourceProblem]:
    """Calls to functions neither defined in ``modules`` nor built into regopy."""
    return [
        SourceProblem(
            path,
            line,
            f"calls {name}(), which the embedded engine (regopy {regopy.__version__}) "
            "does not implement; rules calling it would be undefined",
        )
        for path, line, name in find_calls(modules)
        if not interpreter.is_builtin(name)
    ]


class EmbeddedEngine(PolicyEngine):
    """Evaluate decisions in-process with regopy.

    Example::

        engine = EmbeddedEngine(PolicySet.from_directory("policies"))
        decision = engine.decide(policy_input)
    """

    name = "embedded"

    def __init__(
        self,
        policy_set: PolicySet | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        input_cache: int = 64,
        opa_check: Path | None = None,
    ) -> None:
        """Load ``policy_set`` if given.

        ``opa_check`` is an ``opa`` binary every policy set is compiled with before it
        is accepted (see :mod:`sandbox.policy.opacheck`): regopy accepts some rules OPA
        refuses, such as one using an unbound variable, which would never match.
        """
        super().__init__(timeout=timeout)
        self._opa_check = opa_check
        self._bundle: regopy.Bundle | None = None
        self._runner: regopy.Interpreter | None = None
        self._entrypoints: Mapping[str, str] = {}
        self._input_cache_size = input_cache
        self._inputs: OrderedDict[str, regopy.Input] = OrderedDict()
        if policy_set is not None:
            self.load(policy_set)

    def _install(self, policy_set: PolicySet) -> None:
        if self._opa_check is not None:
            opa_check(self._opa_check, policy_set.modules)
        conflicts = arity_conflicts(policy_set.modules)
        if conflicts:
            raise PolicyLoadError("policy would crash the embedded engine", conflicts)
        interpreter = new_interpreter(policy_set.modules, policy_set.data)
        problems = unsupported_calls(interpreter, policy_set.modules)
        if problems:
            raise PolicyLoadError("policy uses builtins the embedded engine lacks", problems)
        entrypoints = dict(policy_set.action_entrypoints)
        try:
            bundle = interpreter.build(None, [ENTRYPOINT, *sorted(set(entrypoints.values()))])
        except regopy.RegoError as exc:
            raise PolicyLoadError(
                "policy does not compile",
                compile_problems(exc, policy_set.modules, "main/main.rego"),
            ) from exc
        if not bundle.ok():
            raise PolicyLoadError(
                "policy does not compile",
                [SourceProblem("main/main.rego", 1, "bundle for main/decision failed to build")],
            )
        runner = regopy.Interpreter()
        runner.set_input_term("{}")
        try:
            probe = query_entrypoint(runner, bundle, ENTRYPOINT)
        except EvaluationError:
            probe = None
        if probe is None:
            raise PolicyLoadError(
                "policy has no decision",
                [SourceProblem("main/main.rego", 1, "data.main.decision is undefined")],
            )
        self._bundle, self._runner, self._entrypoints = bundle, runner, entrypoints

    def _evaluate(self, document: dict[str, Any]) -> Any:
        runner, bundle = self._runner, self._bundle
        if runner is None or bundle is None:  # pragma: no cover - guarded by decide()
            raise EvaluationError(CODE_ENGINE_ERROR, "no compiled bundle")
        runner.set_input(self._input(document))
        return query_entrypoint(
            runner, bundle, self._entrypoints.get(str(document.get("action", "")), ENTRYPOINT)
        )

    def _input(self, document: dict[str, Any]) -> regopy.Input:
        """``document`` converted for regopy, from a small LRU cache keyed by its JSON."""
        if self._input_cache_size <= 0:
            return make_input(document)
        key = json.dumps(document, sort_keys=True, separators=(",", ":"))
        cached = self._inputs.get(key)
        if cached is not None:
            self._inputs.move_to_end(key)
            return cached
        converted = make_input(document)
        self._inputs[key] = converted
        if len(self._inputs) > self._input_cache_size:
            self._inputs.popitem(last=False)
        return converted


_C = _capi.rego


def make_input(value: Any) -> regopy.Input:
    """``regopy.Input(value)`` for JSON values, about twice as fast.

    regopy builds the input with one Python-level wrapper call (and one string buffer
    copy) per node; this calls the C functions directly. Only JSON types are accepted
    (dict with string keys, list, str, int, float, bool, None).

    Raises:
        ValueError: if ``value`` holds something that is not JSON.
        regopy.RegoError: if regopy refuses a node.
    """
    impl = _capi.rego_new_input()
    string, integer, number = _C.regoInputString, _C.regoInputInt, _C.regoInputFloat
    boolean, null, item = _C.regoInputBoolean, _C.regoInputNull, _C.regoInputObjectItem
    obj, array = _C.regoInputObject, _C.regoInputArray

    def add(node: Any) -> int:
        kind = type(node)
        if kind is str:
            return int(string(impl, node.encode()))
        if kind is dict:
            for key, child in node.items():
                if type(key) is not str:
                    raise ValueError(f"input object key {key!r} is not a string")
                if string(impl, key.encode()) or add(child) or item(impl):
                    return 1
            return int(obj(impl, len(node)))
        if kind is list or kind is tuple:
            for child in node:
                if add(child):
                    return 1
            return int(array(impl, len(node)))
        if kind is bool:
            return int(boolean(impl, node))
        if kind is int:
            return int(integer(impl, node))
        if kind is float:
            return int(number(impl, node))
        if node is None:
            return int(null(impl))
        raise ValueError(f"cannot pass {kind.__name__} to the policy engine")

    try:
        if add(value):
            raise regopy.RegoError("unable to create input")
    except BaseException:
        _capi.rego_free_input(impl)
        raise
    converted: regopy.Input = regopy.Input.__new__(regopy.Input)
    converted._impl = impl
    return converted


def query_entrypoint(runner: regopy.Interpreter, bundle: regopy.Bundle, entrypoint: str) -> Any:
    """Evaluate ``entrypoint`` of ``bundle``; its value, or ``None`` when undefined.

    Raises:
        EvaluationError: if regopy reports an evaluation error.
    """
    impl = _capi.rego_bundle_query_entrypoint(runner._impl, bundle._impl, entrypoint)
    try:
        if not _capi.rego_output_ok(impl):
            raise EvaluationError(CODE_ENGINE_ERROR, f"evaluating {entrypoint} failed")
        text = _capi.rego_output_string(impl)
        if text == "undefined":
            return None
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return node_value(_capi.rego_output_expressions_at_index(impl, 0))
        if isinstance(parsed, list):
            parsed = parsed[0] if parsed else {}
        expressions = parsed.get("expressions") or [None]
        return expressions[0]
    finally:
        _capi.rego_free_output(impl)


def node_value(impl: Any) -> Any:
    """Convert a regopy result node (and its children) to a Python value.

    Sets become lists. A string node holds either the raw text or, for strings the
    engine built itself, the text wrapped in double quotes; the wrapping quotes are
    removed, so a raw string that itself starts and ends with ``"`` loses them too.
    """
    kind = _capi.rego_node_type(impl)
    size = _capi.rego_node_size(impl)
    children = [_capi.rego_node_get(impl, i) for i in range(size)]
    if kind in (NodeKind.Terms, NodeKind.Term, NodeKind.Scalar, NodeKind.Results, NodeKind.Result):
        return node_value(children[0]) if children else None
    if kind == NodeKind.Object:
        items = {}
        for item in children:
            key = node_value(_capi.rego_node_get(item, 0))
            items[key] = node_value(_capi.rego_node_get(item, 1))
        return items
    if kind in (NodeKind.Array, NodeKind.Set):
        return [node_value(child) for child in children]
    text = _capi.rego_node_value(impl)
    if kind == NodeKind.Int:
        return int(text)
    if kind == NodeKind.Float:
        return float(text)
    if kind in (NodeKind.Boolean, NodeKind.True_, NodeKind.False_):
        return text == "true"
    if kind == NodeKind.Null:
        return None
    if kind == NodeKind.String:
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    raise EvaluationError(CODE_ENGINE_ERROR, f"unexpected result node {kind}")
