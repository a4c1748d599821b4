"""Package boundaries: the import contracts in ``.importlinter`` hold.

``operators`` → ``sandbox`` → ``audit``; ``audit`` imports no Kubernetes client; inside
``sandbox`` the layers run from the command line down to the kube client and the API
types, the two servers (gateway, lifecycle) never import each other, plans import no
server, and devenv never imports the test helpers. A reverse import fails here.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"


def test_every_import_contract_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = lint_imports(config_filename=str(CONFIG), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert exit_code == 0, report


def test_every_part_of_sandbox_has_its_place_in_the_layers() -> None:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    layers = parser["importlinter:contract:sandbox-layers"]["layers"]
    placed = {name.strip() for line in layers.split("\n") for name in line.split("|")} - {""}
    parts = {
        path.stem if path.is_file() else path.name
        for path in (ROOT / "sandbox").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    assert parts == placed, f"place {sorted(parts - placed)} in .importlinter's sandbox layers"
