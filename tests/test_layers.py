"""Package boundaries: the import contracts in ``.importlinter`` hold.

``operators`` → ``sandbox`` → ``audit``; ``audit`` imports no Kubernetes client; inside
``sandbox`` the layers run from the command line down to the kube client and the API
types, the two servers (gateway, lifecycle) never import each other, plans import no
server, and devenv never imports the test helpers. A reverse import fails here.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"


def test_every_import_contract_is_kept() -> None:
    # In a process of its own: under pytest, ``tests/`` is on sys.path and its
    # ``tests/audit`` package would stand in for the real ``audit``.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [Path(sys.executable).with_name("lint-imports"), "--config", CONFIG, "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
