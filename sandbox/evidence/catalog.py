"""The control catalogue: which regulation asks for what, and which check decides it.

The catalogue is data, ``catalog/regsandbox-controls.json``, an OSCAL 1.1 catalog read
and validated with compliance-trestle's models. Each control carries a ``check-id``
property (namespace :data:`NS`) naming the automated check in :mod:`sandbox.evidence.assess`
that decides it, and an ``evidence`` part saying, for a person, what proves it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from trestle.oscal.catalog import Catalog
from trestle.oscal.common import Part, Property

__all__ = ["CATALOG_FILE", "NS", "Control", "catalog_bytes", "load_catalog", "load_controls"]

NS = "https://regsandbox.io/ns/evidence"
"""OSCAL namespace of the properties and parts regsandbox defines."""

CATALOG_FILE = "regsandbox-controls.json"
"""File name of the catalogue inside the package (and inside every pack)."""


@dataclass(frozen=True)
class Control:
    """One control of the catalogue, as the checks and the report need it."""

    id: str
    """OSCAL control id, such as ``aia-59-1-g``."""
    title: str
    """Short title."""
    label: str
    """The article it comes from, such as ``Art. 59(1)(g)``."""
    regulation: str
    """Title of the group (the regulation)."""
    statement: str
    """What the regulation asks, paraphrased."""
    evidence: str
    """What in a pack proves it."""
    check: str
    """Id of the automated check that decides it."""


def catalog_bytes() -> bytes:
    """The catalogue file exactly as shipped."""
    folder = resources.files("sandbox.evidence").joinpath("catalog")
    return folder.joinpath(CATALOG_FILE).read_bytes()


@cache
def load_catalog() -> Catalog:
    """The catalogue, parsed and validated against the OSCAL catalog model."""
    return Catalog.model_validate_json(_unwrap(catalog_bytes()))


def _unwrap(data: bytes) -> bytes:
    doc = json.loads(data)
    return json.dumps(doc["catalog"]).encode()


def _prop(props: list[Property] | None, name: str) -> str:
    for prop in props or []:
        if prop.name == name:
            return str(prop.value)
    raise ValueError(f"control has no {name!r} property")


def _part(parts: list[Part] | None, name: str) -> str:
    for part in parts or []:
        if part.name == name and part.prose:
            return part.prose
    raise ValueError(f"control has no {name!r} part")


@cache
def load_controls() -> tuple[Control, ...]:
    """Every control of the catalogue, in catalogue order."""
    found: list[Control] = []
    for group in load_catalog().groups or []:
        for control in getattr(group, "controls", None) or []:
            found.append(
                Control(
                    id=control.id,
                    title=control.title,
                    label=_prop(control.props, "label"),
                    regulation=group.title,
                    statement=_part(control.parts, "statement"),
                    evidence=_part(control.parts, "evidence"),
                    check=_prop(control.props, "check-id"),
                )
            )
    return tuple(found)
