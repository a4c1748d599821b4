"""A policy set: the Rego modules and data documents both engines evaluate.

Files are laid out the way ``opa`` loads a directory: every ``*.rego`` file is a
module, every ``data.json`` / ``data.yaml`` file is a data document placed at its
directory's path below the root (``policies/data/regions/data.json`` becomes
``data.data.regions``). ``*_test.rego`` files are tests, kept apart from the modules
that decide and left out of the digest.

Custom policies (the SandboxPolicy resource) are added with :meth:`PolicySet.with_custom`.
Each becomes the module ``sandboxpolicy/<name>.rego``, which must declare a package
``custom.<id>`` and define ``violations`` as a set of objects with ``code``, ``msg``,
``regulation`` and ``subject``. Its data is placed at ``data.custom_data["<name>"]``
(read it as ``data.custom_data["no-gpu"].limit``), and how it is enforced at
``data.custom_policies["<name>"] = {"package": "<id>", "enforcement": "deny" | "warn" |
"dryrun", "sectors": [...]}``, so the digest covers modules, data, enforcement and
scope alike.

Default SandboxPolicies live beside the built-in packages, one module per policy in
``<root>/sandboxpolicy/<name>.rego`` (with its ``_test.rego``). They are not part of
the built-in set: :meth:`PolicySet.from_directory` reads them into
:attr:`PolicySet.defaults`, each described by its package's ``# METADATA`` block::

    # METADATA
    # title: Egress is HTTPS
    # custom:
    #   sandboxPolicy:
    #     name: egress-https-only      # must equal the file name
    #     enforcement: warn            # deny | warn | dryrun
    #     sectors: []                  # empty: every sector
    #     data: {}                     # optional, becomes the SandboxPolicy's spec.data
    package custom.egress_https_only

The chart installs them as SandboxPolicy objects (``python -m sandbox.policy.defaults``
renders them), so they can be changed or deleted like any other.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import rfc8785
import yaml

from sandbox.errors import SandboxError

__all__ = [
    "ACTION_RULES",
    "CUSTOM_DATA_KEY",
    "CUSTOM_MODULE_DIR",
    "CUSTOM_POLICIES_KEY",
    "DECISION_QUERY",
    "DEFAULT_POLICY_DIR",
    "CustomPolicy",
    "Enforcement",
    "PolicyLoadError",
    "PolicySet",
    "SourceProblem",
    "arity_conflicts",
    "find_calls",
    "policy_digest",
    "read_default_policy",
]

DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
"""The policies shipped in the repository."""

DECISION_QUERY = "data.main.decision"
"""The entry point answering every action (what users and ``opa eval`` query)."""

ACTION_RULES: Mapping[str, str] = {
    "sandbox.provision": "sandbox_provision",
    "dataset.grant": "dataset_grant",
    "model.export": "model_export",
}
"""Action → rule of package ``main`` answering only that action.

``data.main.<rule>`` equals ``data.main.decision`` for an input of that action but
evaluates only the packages that can apply to it; the engines query it when the
policy set defines it.
"""

CUSTOM_MODULE_DIR = "sandboxpolicy"
"""Module paths of custom policies: ``sandboxpolicy/<name>.rego``."""
CUSTOM_DATA_KEY = "custom_data"
"""Top-level data key holding each custom policy's data by SandboxPolicy name."""
CUSTOM_POLICIES_KEY = "custom_policies"
"""Top-level data key holding each custom policy's package, enforcement and scope."""

Enforcement = Literal["deny", "warn", "dryrun"]
"""How a custom policy's violations count: deny, warn, or only logged (dryrun)."""

_DATA_FILES = ("data.json", "data.yaml", "data.yml")


@dataclass(frozen=True)
class SourceProblem:
    """A problem found in one policy file, at a line a person can open."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class PolicyLoadError(SandboxError):
    """A policy set cannot be loaded; ``problems`` names each file and line."""

    def __init__(self, message: str, problems: Iterable[SourceProblem] = ()) -> None:
        self.problems = list(problems)
        detail = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(f"{message}{detail}")


def policy_digest(modules: Mapping[str, str], data: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` over every module (path and source) and the data document.

    Modules are hashed in path order with their lengths, and data as RFC 8785
    canonical JSON, so the digest changes exactly when a decision could.
    """
    h = hashlib.sha256()
    for path in sorted(modules):
        source = modules[path].encode()
        encoded_path = path.encode()
        h.update(b"module\x00%d\x00" % len(encoded_path) + encoded_path)
        h.update(b"\x00%d\x00" % len(source) + source)
    h.update(b"data\x00" + rfc8785.dumps(dict(data)))
    return "sha256:" + h.hexdigest()


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_CUSTOM_PACKAGE = re.compile(r"^custom\.([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class CustomPolicy:
    """One SandboxPolicy as the policy layer sees it.

    Example::

        CustomPolicy(
            name="no-gpu",
            rego='''package custom.no_gpu

        violations contains {"code": "NO_GPU", "msg": "GPUs are not allowed",
            "regulation": "internal", "subject": "sandbox/x"} if input.sandbox.resources.gpu > 0
        ''',
            enforcement="warn",
            sectors=["finance"],
        )
    """

    name: str
    """The SandboxPolicy's metadata.name."""
    rego: str
    """Module text; declares ``package custom.<id>`` and defines ``violations``."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Placed at ``data.custom_data["<name>"]``."""
    enforcement: Enforcement = "deny"
    """``deny``: violations deny; ``warn``/``dryrun``: they become decision warnings."""
    sectors: Sequence[str] = ()
    """Tenant sectors the policy applies to; empty means every sector."""

    @property
    def module_path(self) -> str:
        """Path of the module inside the policy set."""
        return f"{CUSTOM_MODULE_DIR}/{self.name}.rego"

    def package(self) -> str:
        """The ``<id>`` of ``package custom.<id>``.

        Raises:
            PolicyLoadError: naming the SandboxPolicy and the line, if the name is not
                a Kubernetes object name, the enforcement is unknown, or the module
                does not declare one package directly under ``custom.``.
        """
        where = self.module_path
        if not _NAME.match(self.name):
            raise PolicyLoadError(
                f"SandboxPolicy {self.name!r}: invalid name",
                [SourceProblem(where, 1, "the name must be a lowercase Kubernetes object name")],
            )
        if self.enforcement not in get_args(Enforcement):
            raise PolicyLoadError(
                f"SandboxPolicy {self.name}: invalid enforcement",
                [
                    SourceProblem(
                        where, 1, f"enforcement {self.enforcement!r} is not deny, warn or dryrun"
                    )
                ],
            )
        text = _STRING_OR_COMMENT.sub(_blank, self.rego)
        match = _PACKAGE.search(text)
        if match is None:
            raise PolicyLoadError(
                f"SandboxPolicy {self.name}: module has no package",
                [
                    SourceProblem(
                        where, 1, "declare a package under custom., e.g. package custom.no_gpu"
                    )
                ],
            )
        line = text.count("\n", 0, match.start()) + 1
        package = _CUSTOM_PACKAGE.match(match.group(1))
        if package is None:
            raise PolicyLoadError(
                f"SandboxPolicy {self.name}: wrong package",
                [
                    SourceProblem(
                        where,
                        line,
                        f"package {match.group(1)} is not directly under "
                        "custom.; use e.g. package custom.no_gpu",
                    )
                ],
            )
        return package.group(1)


@dataclass(frozen=True)
class PolicySet:
    """Modules, tests and data of one policy directory, with their digest."""

    modules: Mapping[str, str]
    """Module path (relative, ``/``-separated) → Rego source; tests excluded."""
    data: Mapping[str, Any]
    """The merged base document (what Rego reads below ``data``)."""
    tests: Mapping[str, str] = field(default_factory=dict)
    """Test module path → Rego source (``*_test.rego``)."""
    root: Path | None = None
    """The directory the set was read from, if any."""
    custom: tuple[CustomPolicy, ...] = ()
    """The custom policies added by :meth:`with_custom`."""
    defaults: tuple[CustomPolicy, ...] = ()
    """Default SandboxPolicies found in ``sandboxpolicy/`` (not in force by themselves)."""

    @cached_property
    def digest(self) -> str:
        """The policy digest carried by every decision made with this set."""
        return policy_digest(self.modules, self.data)

    @cached_property
    def action_entrypoints(self) -> Mapping[str, str]:
        """Action → ``main/<rule>`` for the per-action rules package ``main`` defines."""
        found: dict[str, str] = {}
        for source in self.modules.values():
            text = _STRING_OR_COMMENT.sub(_blank, source)
            match = _PACKAGE.search(text)
            if match is None or match.group(1) != "main":
                continue
            for action, rule in ACTION_RULES.items():
                if re.search(rf"^{rule}\s*(?::=|=|if\b|\{{)", text, re.MULTILINE):
                    found[action] = f"main/{rule}"
        return found

    def with_custom(self, policies: Sequence[CustomPolicy]) -> PolicySet:
        """This set with exactly ``policies`` as its custom policies.

        Custom policies added before are replaced, so the operator passes every
        SandboxPolicy it holds. Whether a module compiles is checked when an engine
        loads the set (both engines refuse it with the compiler's message and line,
        and keep the set they had).

        Raises:
            PolicyLoadError: naming the SandboxPolicy and the line, if a name is
                invalid or used twice, an enforcement is unknown, a module does not
                declare a package directly under ``custom.``, or two policies declare
                the same package.
        """
        modules = {
            path: source
            for path, source in self.modules.items()
            if not path.startswith(CUSTOM_MODULE_DIR + "/")
        }
        data = {
            k: v for k, v in self.data.items() if k not in (CUSTOM_DATA_KEY, CUSTOM_POLICIES_KEY)
        }
        config: dict[str, Any] = {}
        custom_data: dict[str, Any] = {}
        packages: dict[str, str] = {}
        for policy in policies:
            package = policy.package()
            if policy.name in config:
                raise PolicyLoadError(
                    f"SandboxPolicy {policy.name}: name used twice",
                    [SourceProblem(policy.module_path, 1, "two custom policies share a name")],
                )
            if package in packages:
                raise PolicyLoadError(
                    f"SandboxPolicy {policy.name}: package custom.{package} is already "
                    f"declared by SandboxPolicy {packages[package]}",
                    [
                        SourceProblem(
                            policy.module_path, 1, "each SandboxPolicy needs its own package"
                        )
                    ],
                )
            packages[package] = policy.name
            modules[policy.module_path] = policy.rego
            custom_data[policy.name] = dict(policy.data)
            config[policy.name] = {
                "package": package,
                "enforcement": policy.enforcement,
                "sectors": sorted(set(policy.sectors)),
            }
        if policies:
            data[CUSTOM_DATA_KEY] = custom_data
            data[CUSTOM_POLICIES_KEY] = config
        return PolicySet(
            modules=modules,
            data=data,
            tests=self.tests,
            root=self.root,
            custom=tuple(policies),
            defaults=self.defaults,
        )

    @classmethod
    def from_directory(cls, root: Path | str = DEFAULT_POLICY_DIR) -> PolicySet:
        """Read every module, test and data file below ``root``.

        Modules in ``sandboxpolicy/`` become :attr:`defaults`, not built-in modules.

        Raises:
            PolicyLoadError: if ``root`` holds no module, a data file is not an
                object of valid JSON/YAML, or a default SandboxPolicy's metadata is
                missing or invalid.
        """
        root = Path(root)
        if not root.is_dir():
            raise PolicyLoadError(f"policy directory {root} does not exist")
        modules: dict[str, str] = {}
        tests: dict[str, str] = {}
        data: dict[str, Any] = {}
        defaults: list[CustomPolicy] = []
        for path in sorted(root.rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.parts):
                continue
            rel = path.relative_to(root).as_posix()
            if path.suffix == ".rego":
                source = path.read_text(encoding="utf-8")
                if path.name.endswith("_test.rego"):
                    tests[rel] = source
                elif rel.startswith(CUSTOM_MODULE_DIR + "/"):
                    defaults.append(read_default_policy(rel, source))
                else:
                    modules[rel] = source
            elif path.name in _DATA_FILES:
                _merge(data, path.parent.relative_to(root).parts, _read_data(path, rel))
        if not modules and not tests and not defaults:
            raise PolicyLoadError(f"no .rego files below {root}")
        return cls(modules=modules, data=data, tests=tests, root=root, defaults=tuple(defaults))


_METADATA_LINE = re.compile(r"^#( |$)")


def read_default_policy(path: str, source: str) -> CustomPolicy:
    """The default SandboxPolicy in module ``source`` at ``path`` (``sandboxpolicy/<name>.rego``).

    Its name, enforcement, sectors and data come from ``custom.sandboxPolicy`` in the
    ``# METADATA`` block just above the ``package`` line.

    Raises:
        PolicyLoadError: naming the file, if the block is missing or malformed, the
            name differs from the file name, or the module's package is not under
            ``custom.``.
    """
    name = path.rsplit("/", 1)[-1].removesuffix(".rego")
    lines = source.splitlines()
    package_line = next((i for i, ln in enumerate(lines) if ln.startswith("package ")), 0)
    start = package_line
    while start and lines[start - 1].startswith("#"):
        start -= 1
    block = lines[start:package_line]
    if not block or block[0].strip() != "# METADATA":
        raise PolicyLoadError(
            "default SandboxPolicy has no metadata",
            [
                SourceProblem(
                    path, 1, "add a # METADATA block with custom.sandboxPolicy above the package"
                )
            ],
        )
    try:
        annotation = yaml.safe_load("\n".join(_METADATA_LINE.sub("", ln) for ln in block[1:]))
    except yaml.YAMLError as exc:
        raise PolicyLoadError(
            "default SandboxPolicy metadata is not YAML", [SourceProblem(path, start + 1, str(exc))]
        ) from exc
    spec = ((annotation or {}).get("custom") or {}).get("sandboxPolicy")
    where = SourceProblem(path, start + 1, "")
    if not isinstance(spec, dict):
        raise PolicyLoadError(
            "default SandboxPolicy metadata lacks custom.sandboxPolicy",
            [
                SourceProblem(
                    where.path,
                    where.line,
                    "expected custom.sandboxPolicy: {name, enforcement, sectors}",
                )
            ],
        )
    if spec.get("name") != name:
        raise PolicyLoadError(
            "default SandboxPolicy name does not match its file",
            [SourceProblem(where.path, where.line, f"custom.sandboxPolicy.name must be {name!r}")],
        )
    sectors, data = spec.get("sectors") or [], spec.get("data") or {}
    if not isinstance(sectors, list) or not all(isinstance(x, str) for x in sectors):
        raise PolicyLoadError(
            "default SandboxPolicy sectors invalid",
            [SourceProblem(where.path, where.line, "sectors must be a list of sector names")],
        )
    if not isinstance(data, dict):
        raise PolicyLoadError(
            "default SandboxPolicy data invalid",
            [SourceProblem(where.path, where.line, "data must be an object")],
        )
    policy = CustomPolicy(
        name=name,
        rego=source,
        data=data,
        enforcement=spec.get("enforcement", "deny"),
        sectors=tuple(sectors),
    )
    policy.package()  # name, enforcement and package checked here
    return policy


def _read_data(path: Path, rel: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            line = exc.lineno
        else:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
        raise PolicyLoadError("invalid policy data", [SourceProblem(rel, line, str(exc))]) from exc
    if not isinstance(value, dict):
        raise PolicyLoadError(
            "invalid policy data", [SourceProblem(rel, 1, "a data file must hold an object")]
        )
    return value


def _merge(target: dict[str, Any], parts: tuple[str, ...], value: dict[str, Any]) -> None:
    node = target
    for part in parts:
        node = node.setdefault(part, {})
    for key, item in value.items():
        if isinstance(item, dict) and isinstance(node.get(key), dict):
            _merge(node, (key,), item)
        else:
            node[key] = item


# --- static scan for function calls --------------------------------------------------

_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')
_CALL = re.compile(r"(?<![\w.\]])((?:[A-Za-z_]\w*)(?:\.[A-Za-z_]\w*)*)\s*\(")
_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_IMPORT = re.compile(r"^import\s+([\w.]+)(?:\s+as\s+(\w+))?", re.MULTILINE)
_FUNCTION_HEAD = re.compile(r"^([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_KEYWORDS = frozenset(
    {"if", "else", "not", "some", "every", "in", "contains", "with", "as", "default", "set"}
)


def _blank(match: re.Match[str]) -> str:
    return "".join("\n" if ch == "\n" else " " for ch in match.group(0))


def _arity(text: str, start: int) -> int:
    """The number of arguments of the call or head whose ``(`` is at ``start``."""
    depth, commas, empty = 0, 0, True
    for char in text[start:]:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                break
        elif char == "," and depth == 1:
            commas += 1
        elif depth == 1 and not char.isspace():
            empty = False
    return 0 if empty and commas == 0 else commas + 1


def arity_conflicts(modules: Mapping[str, str]) -> list[SourceProblem]:
    """Functions of one name defined with different numbers of arguments.

    regopy 1.5 aborts the whole process (not an error it raises) when it compiles a
    bundle in which two packages define a function of the same name with different
    arities, e.g. ``a.f(x)`` and ``b.f(x, y)``, whether or not either is called.
    Each problem names a definition and the other arities its name has elsewhere, so
    such a set can be refused before it reaches the engine.
    """
    heads: list[tuple[str, int, str, int]] = []
    for path, source in modules.items():
        text = _STRING_OR_COMMENT.sub(_blank, source)
        for match in _FUNCTION_HEAD.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            heads.append((path, line, match.group(1), _arity(text, match.end() - 1)))
    arities: dict[str, set[int]] = {}
    for _, _, name, arity in heads:
        arities.setdefault(name, set()).add(arity)
    return [
        SourceProblem(
            path,
            line,
            f"function {name}() takes {arity} argument(s) here and "
            f"{', '.join(str(a) for a in sorted(arities[name] - {arity}))} elsewhere; "
            f"the embedded engine (regopy) crashes on a name defined with different "
            "arities in different packages: rename one",
        )
        for path, line, name, arity in sorted(heads)
        if len(arities[name]) > 1
    ]


def find_calls(modules: Mapping[str, str]) -> list[tuple[str, int, str]]:
    """Every call to a function the modules do not define themselves.

    Returns ``(path, line, name)`` for each call whose target is not a function
    defined in one of ``modules``, i.e. the builtins the policy set relies on.
    Strings and comments are ignored; calls through import aliases and
    ``data.``-references are resolved to the defining package.
    """
    packages: dict[str, str] = {}
    defined: set[str] = set()
    cleaned: dict[str, str] = {}
    for path, source in modules.items():
        text = _STRING_OR_COMMENT.sub(_blank, source)
        cleaned[path] = text
        match = _PACKAGE.search(text)
        package = match.group(1) if match else ""
        packages[path] = package
        defined.update(f"{package}.{m.group(1)}" for m in _FUNCTION_HEAD.finditer(text))
    calls: list[tuple[str, int, str]] = []
    for path, text in cleaned.items():
        aliases = {
            (m.group(2) or m.group(1).rsplit(".", 1)[-1]): m.group(1)
            for m in _IMPORT.finditer(text)
        }
        for match in _CALL.finditer(text):
            name = match.group(1)
            if name in _KEYWORDS:
                continue
            head, _, rest = name.partition(".")
            if head == "data":
                resolved = rest
            elif head in aliases and rest:
                resolved = aliases[head].removeprefix("data.") + "." + rest
            else:
                resolved = f"{packages[path]}.{name}"
            if resolved in defined:
                continue
            line = text.count("\n", 0, match.start()) + 1
            calls.append((path, line, name))
    return calls
