"""A SoftHSM2 token for the local stack, so ``make up KEY_PROVIDER=pkcs11`` has an HSM.

The token lives under the stack's state directory (``<dir>/softhsm``): its own
``softhsm2.conf`` (``SOFTHSM2_CONF``) and token directory, a random user PIN and SO PIN
in files of mode 0600. Initialising again finds the token by its label and keeps it, so
the keys made by an earlier run survive a restart of the stack. The operator gets the
``REGSANDBOX_PKCS11_*`` settings; the PIN is also put in the Secret the chart would read
(``operator.pkcs11.pinSecret``, key ``pin``).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.errors import ConfigurationError

__all__ = ["DEFAULT_MODULE", "DEFAULT_TOKEN_LABEL", "PIN_SECRET", "SoftHsmToken", "init_softhsm"]

DEFAULT_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
"""Where Debian's softhsm2 package puts the PKCS#11 module."""

DEFAULT_TOKEN_LABEL = "regsandbox-dev"  # noqa: S105 - a token label, not a PIN
"""Label of the local stack's token."""

PIN_SECRET = "regsandbox-pkcs11-pin"  # noqa: S105 - a Secret's name, not a PIN
"""Name of the Secret holding the user PIN (the chart's ``operator.pkcs11.pinSecret``)."""


@dataclass(frozen=True)
class SoftHsmToken:
    """An initialised SoftHSM2 token. ``repr`` shows paths only, never a PIN."""

    module: Path
    """The PKCS#11 module."""
    conf: Path
    """The ``softhsm2.conf`` naming the token directory (``SOFTHSM2_CONF``)."""
    label: str
    """The token's label."""
    pin_file: Path
    """File holding the user PIN (mode 0600)."""

    def operator_env(self) -> dict[str, str]:
        """The operator's settings for this token, and SoftHSM2's own variable."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "REGSANDBOX_KEY_PROVIDER": "pkcs11",
            "REGSANDBOX_PKCS11_MODULE": str(self.module),
            "REGSANDBOX_PKCS11_TOKEN_LABEL": self.label,
            "REGSANDBOX_PKCS11_PIN_FILE": str(self.pin_file),
        }

    def pin_secret(self, namespace: str, name: str = PIN_SECRET) -> dict[str, Any]:
        """The Secret holding the user PIN under ``pin``, as the chart mounts it."""
        pin = self.pin_file.read_bytes().strip()
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "regsandbox"},
            },
            "type": "Opaque",
            "data": {"pin": base64.b64encode(pin).decode("ascii")},
        }


def _pin(path: Path) -> str:
    """The PIN in ``path``, made (random, mode 0600) if the file does not exist."""
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(16) + "\n")
    return path.read_text().strip()


def init_softhsm(
    directory: Path, label: str = DEFAULT_TOKEN_LABEL, module: Path = DEFAULT_MODULE
) -> SoftHsmToken:
    """Initialise (or find again) the token ``label`` under ``directory``.

    Raises :class:`ConfigurationError`, saying what to install, when SoftHSM2 is missing.
    """
    util = shutil.which("softhsm2-util")
    if util is None or not module.is_file():
        raise ConfigurationError(
            "the pkcs11 key provider needs SoftHSM2 locally (softhsm2-util and "
            f"{module}); install the Debian package softhsm2 (make deps does)"
        )
    if not 1 <= len(label) <= 32:
        raise ConfigurationError(f"a token label has 1 to 32 characters, not {len(label)}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tokens = directory / "tokens"
    tokens.mkdir(exist_ok=True, mode=0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    user_pin, so_pin = _pin(directory / "user.pin"), _pin(directory / "so.pin")
    slots = subprocess.run(
        [util, "--show-slots"], env=env, capture_output=True, text=True, check=True
    ).stdout
    labelled = [line.split(":", 1)[1].strip() for line in slots.splitlines() if "Label:" in line]
    if label not in labelled:
        _init(util, env, label, user_pin, so_pin)
    return SoftHsmToken(module=module, conf=conf, label=label, pin_file=directory / "user.pin")


def _init(util: str, env: dict[str, str], label: str, user_pin: str, so_pin: str) -> None:
    run = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", user_pin, "--so-pin", so_pin],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        # softhsm2-util does not echo PINs; its message says what went wrong.
        raise ConfigurationError(
            f"softhsm2-util could not initialise token {label!r}: "
            f"{(run.stderr or run.stdout).strip()[-500:]}"
        )
