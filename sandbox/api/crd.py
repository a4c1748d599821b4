"""Generate CustomResourceDefinitions from the pydantic API models.

Pydantic's JSON Schema is turned into a Kubernetes *structural* schema: references
inlined, titles dropped, optional fields no longer nullable, and Kubernetes extensions
(list-map keys for conditions, int-or-string quantities) kept. Run::

    python -m sandbox.api.crd charts/regsandbox/crds

to rewrite the committed YAML; a test fails when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from sandbox.api.meta import API_GROUP, API_VERSION
from sandbox.api.resources import RESOURCES, Resource

__all__ = ["crd_filename", "generate_crd", "main", "structural_schema", "write_crds"]

_DROP = {"title", "$defs"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**_inline(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _inline(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _inline(value, defs)
    any_of = out.get("anyOf")
    if isinstance(any_of, list):
        non_null = [s for s in any_of if s != {"type": "null"}]
        if len(non_null) == 1 and len(non_null) < len(any_of):
            del out["anyOf"]
            out = {**non_null[0], **out}
    if out.get("default") is None:
        out.pop("default", None)
    if isinstance(out.get("description"), str):
        out["description"] = out["description"].replace("``", "")
    first = [k for k in ("type", "description") if k in out]
    return {**{k: out[k] for k in first}, **{k: v for k, v in out.items() if k not in first}}


def _conditions(schema: dict[str, Any]) -> None:
    props = schema.get("properties", {})
    cond = props.get("conditions")
    if cond and cond.get("type") == "array":
        cond["x-kubernetes-list-type"] = "map"
        cond["x-kubernetes-list-map-keys"] = ["type"]
    for value in props.values():
        if isinstance(value, dict) and value.get("type") == "object":
            _conditions(value)


def structural_schema(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model, as CRDs require."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    schema.pop("additionalProperties", None)
    _strip_additional(schema)
    _conditions(schema)
    return schema


def _strip_additional(node: Any) -> None:
    """``extra="forbid"`` becomes additionalProperties: false; CRDs prune unknown fields anyway."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        for value in node.values():
            _strip_additional(value)
    elif isinstance(node, list):
        for item in node:
            _strip_additional(item)


def generate_crd(res: Resource) -> dict[str, Any]:
    """The CustomResourceDefinition for one resource."""
    spec_schema = structural_schema(res.spec)
    status_schema = structural_schema(res.status)
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"priority": c.priority} if c.priority else {}),
            **({"description": c.description} if c.description else {}),
        }
        for c in res.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": res.crd_name,
            "labels": {"app.kubernetes.io/part-of": "regsandbox"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": res.scope,
            "names": {
                "kind": res.kind,
                "listKind": f"{res.kind}List",
                "plural": res.plural,
                "singular": res.singular,
                "shortNames": list(res.short_names),
                "categories": ["regsandbox"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": res.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_filename(res: Resource) -> str:
    """File name of the generated CRD."""
    return f"{res.crd_name}.yaml"


def render(res: Resource) -> str:
    """The CRD as YAML with a do-not-edit header."""
    header = "# Generated by `python -m sandbox.api.crd` from sandbox/api; do not edit.\n"
    return header + yaml.safe_dump(generate_crd(res), sort_keys=False, width=100)


def write_crds(directory: Path) -> list[Path]:
    """Write every CRD into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for res in RESOURCES:
        path = directory / crd_filename(res)
        path.write_text(render(res))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.api.crd DIR`` writes the CRDs into DIR."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else Path("charts/regsandbox/crds")
    for path in write_crds(target):
        print(path)


if __name__ == "__main__":
    main()
