"""``make up KEY_PROVIDER=pkcs11``: the local stack's SoftHSM2 token, made and found again.

The token is used by a fresh process (SoftHSM2 reads ``SOFTHSM2_CONF`` once per process,
and this one may have loaded the session's token already), through the operator's own
settings, as ``make up`` starts the operator.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.devenv.softhsm import DEFAULT_MODULE, PIN_SECRET, init_softhsm
from sandbox.errors import ConfigurationError

pytestmark = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not DEFAULT_MODULE.is_file(),
    reason="SoftHSM2 is not installed (the Debian package softhsm2)",
)

_USE = """
import os
import sys
from pathlib import Path
from operators.settings import OperatorSettings
from sandbox.keys import FileWrappedKeyStore, Pkcs11KeyProvider, Pkcs11Settings, read_pin_file
# The operator's settings, as make up gives them; a directory stands in for the Secrets
# the operator keeps wrapped keys in.
s = OperatorSettings(cluster_region="onprem:lu-national-1", cluster_jurisdiction="LU")
hsm = Pkcs11Settings(
    module=s.pkcs11_module, token_label=s.pkcs11_token_label, pin=read_pin_file(s.pkcs11_pin_file)
)
keys = Pkcs11KeyProvider(hsm, FileWrappedKeyStore(Path(os.environ["STORE"])))
if sys.argv[1] == "create":
    print(keys.create("sbx-dev-a", "lu-national-1", {}).key_id)
else:
    print(keys.get("sbx-dev-a").key_id, len(keys.data_key("sbx-dev-a")))
"""


def _use(env: dict[str, str], step: str, store: Path) -> str:
    run = subprocess.run(
        [sys.executable, "-c", _USE, step],
        env={**os.environ, **env, "STORE": str(store)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]  # the last line: before it, the logs


def test_the_token_is_made_once_usable_by_the_operator_and_kept_across_restarts(
    tmp_path: Path,
) -> None:
    state = tmp_path / "stack" / "softhsm"
    token = init_softhsm(state)
    env = token.operator_env()
    assert env["REGSANDBOX_KEY_PROVIDER"] == "pkcs11"
    assert Path(env["SOFTHSM2_CONF"]).parent == state  # under the stack's own state dir
    assert stat.S_IMODE(token.pin_file.stat().st_mode) == 0o600
    pin = token.pin_file.read_text().strip()
    assert len(pin) >= 16
    assert pin not in repr(token)

    made = _use(env, "create", tmp_path / "wrapped")
    again = init_softhsm(state)  # the next `make up`
    assert again == token
    assert token.pin_file.read_text().strip() == pin
    assert _use(again.operator_env(), "get", tmp_path / "wrapped") == f"{made} 32"

    secret = token.pin_secret("regsandbox-system")
    assert secret["metadata"]["name"] == PIN_SECRET
    assert base64.b64decode(secret["data"]["pin"]).decode() == pin


def test_a_missing_module_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="softhsm2"):
        init_softhsm(tmp_path / "softhsm", module=tmp_path / "no-such-module.so")
