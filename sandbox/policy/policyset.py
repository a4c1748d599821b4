"""A policy set: the Rego modules and data documents both engines evaluate.

Files are laid out the way ``opa`` loads a directory: every ``*.rego`` file is a
module, every ``data.json`` / ``data.yaml`` file is a data document placed at its
directory's path below the root (``policies/data/regions/data.json`` becomes
``data.data.regions``). ``*_test.rego`` files are tests, kept apart from the modules
that decide and left out of the digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
import yaml

from sandbox.errors import SandboxError

__all__ = [
    "DECISION_QUERY",
    "DEFAULT_POLICY_DIR",
    "PolicyLoadError",
    "PolicySet",
    "SourceProblem",
    "find_calls",
    "policy_digest",
]

DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
"""The policies shipped in the repository."""

DECISION_QUERY = "data.main.decision"
"""The one entry point every decision is read from."""

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

    @property
    def digest(self) -> str:
        """The policy digest carried by every decision made with this set."""
        return policy_digest(self.modules, self.data)

    @classmethod
    def from_directory(cls, root: Path | str = DEFAULT_POLICY_DIR) -> PolicySet:
        """Read every module, test and data file below ``root``.

        Raises:
            PolicyLoadError: if ``root`` holds no module or a data file is not an
                object of valid JSON/YAML.
        """
        root = Path(root)
        if not root.is_dir():
            raise PolicyLoadError(f"policy directory {root} does not exist")
        modules: dict[str, str] = {}
        tests: dict[str, str] = {}
        data: dict[str, Any] = {}
        for path in sorted(root.rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.parts):
                continue
            rel = path.relative_to(root).as_posix()
            if path.suffix == ".rego":
                target = tests if path.name.endswith("_test.rego") else modules
                target[rel] = path.read_text(encoding="utf-8")
            elif path.name in _DATA_FILES:
                _merge(data, path.parent.relative_to(root).parts, _read_data(path, rel))
        if not modules and not tests:
            raise PolicyLoadError(f"no .rego files below {root}")
        return cls(modules=modules, data=data, tests=tests, root=root)


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
    {"if", "else", "not", "some", "every", "in", "contains", "with", "as", "default"}
)


def _blank(match: re.Match[str]) -> str:
    return "".join("\n" if ch == "\n" else " " for ch in match.group(0))


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
