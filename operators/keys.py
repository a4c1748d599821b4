"""``sandbox-operator keys``: rotate key-encryption keys and data keys beside a live operator.

Run with the operator's own settings and identity — ``kubectl exec`` into an operator
pod, or a one-off Job from the operator's image, ServiceAccount, environment and
volumes (docs/key-custody.md, "Rotating keys"). Every rotated key is recorded in the
audit log as ``key.rotated`` (provider, key id, old and new KEK or data-key ids; never
key material) as it happens, so a rotation that is killed is still accounted for, and
running the command again resumes it.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.client import AuditSink
from audit.entry import Actor, Event, Resource
from operators.settings import OperatorSettings
from sandbox.keys.base import KeyProviderError, validate_sandbox_id
from sandbox.keys.kek_ring import SecretKekRing
from sandbox.keys.local import LocalKeyProvider, RewrappedKey

__all__ = ["app"]

app = typer.Typer(help="Rotate and inspect the sandbox keys.", no_args_is_help=True)

_Kubeconfig = Annotated[
    Path | None,
    typer.Option(help="Kubeconfig (default: in-cluster).", envvar="REGSANDBOX_KUBECONFIG"),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


class _Session:
    """The operator's settings, API client, key provider and audit sink, for one command."""

    def __init__(self, kubeconfig: Path | None, command: str) -> None:
        from operators.wiring import api_client, audit_sink, key_provider

        self.settings = OperatorSettings(kubeconfig=kubeconfig)
        self.api = api_client(self.settings)
        self.keys = key_provider(self.settings, self.api)
        self.audit: AuditSink = audit_sink(self.settings)
        self.command = command

    def record(self, action: str, resource: Resource, details: dict[str, Any]) -> None:
        """Append one audit entry durably (raises, stopping the command, if it cannot)."""
        event = Event(
            actor=Actor(user=self.settings.actor),
            action=action,
            resource=resource,
            outcome="success",
            details={"command": f"sandbox-operator keys {self.command}", **details},
        )
        self.audit.append([event])

    def rotated(self, key: RewrappedKey) -> None:
        """The ``key.rotated`` entry of one KEK rotation step, and its output line."""
        self.record(
            "key.rotated",
            Resource(kind="Key", name=key.key_id, sandbox=key.sandbox_id),
            {
                "provider": self.keys.name,
                "scope": "kek",
                "keyId": key.key_id,
                "oldKekId": key.old_kek_id,
                "newKekId": key.new_kek_id,
            },
        )
        print(
            f"key/{key.key_id} rewrapped ({key.sandbox_id}: {key.old_kek_id} -> {key.new_kek_id})"
        )

    def close(self) -> None:
        close = getattr(self.audit, "close", None)
        if close is not None:
            close()


@contextmanager
def _session(kubeconfig: Path | None, command: str) -> Iterator[_Session]:
    try:
        session = _Session(kubeconfig, command)
    except KeyProviderError as exc:
        raise _fail(str(exc)) from None
    try:
        yield session
    except KeyProviderError as exc:
        raise _fail(str(exc)) from None
    finally:
        session.close()


@app.command("status")
def status(kubeconfig: _Kubeconfig = None) -> None:
    """Show the provider, the KEKs in use, and the keys still under a previous KEK."""
    with _session(kubeconfig, "status") as session:
        keys = session.keys
        print(f"provider: {keys.name}")
        if isinstance(keys, LocalKeyProvider):
            keys.refresh()
            previous = [k for k in keys.kek_ids if k != keys.kek_id]
            print(f"current KEK: {keys.kek_id}")
            print(f"previous KEKs: {', '.join(previous) or '(none)'}")
            left = keys.under_previous()
            print(f"keys under a previous KEK: {len(left)}")


@app.command("rotate-kek")
def rotate_kek(
    kubeconfig: _Kubeconfig = None,
    keep_previous: Annotated[
        bool,
        typer.Option(
            "--keep-previous",
            help="local, KEK in Secrets: keep the previous KEK's Secret after rewrapping.",
        ),
    ] = False,
    made_before: Annotated[
        dt.datetime | None,
        typer.Option(
            help="pkcs11: rotate token KEKs made before this time (UTC); pass the time an "
            "interrupted run printed to resume it. Default: now."
        ),
    ] = None,
) -> None:
    """Rotate the key-encryption key(s) without stopping the operator.

    local, KEK in Secrets: stage a new KEK generation (unless one is staged already),
    rewrap every data key under it, then delete the previous KEK's Secret. local, KEK
    from files: rewrap every data key under REGSANDBOX_LOCAL_KEK_FILE; then empty
    REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE. pkcs11: give every sandbox a new token KEK.
    """
    from sandbox.keys.pkcs11 import Pkcs11KeyProvider  # only with pkcs11: loads its binding

    with _session(kubeconfig, "rotate-kek") as session:
        keys = session.keys
        if isinstance(keys, LocalKeyProvider):
            _rotate_local(session, keys, keep_previous=keep_previous)
        elif isinstance(keys, Pkcs11KeyProvider):
            cutoff = (made_before or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
            print(f"rotating token KEKs made before {cutoff.isoformat()}")
            result = keys.rotate_kek(made_before=cutoff, on_rotated=session.rotated)
            print(f"{result.rotated} rotated, {result.already_current} already current")
            if result.failed:
                raise _fail(
                    f"{len(result.failed)} sandbox key(s) kept their token KEK: "
                    f"{', '.join(result.failed)}; look at them, then run again with "
                    f"--made-before {cutoff.isoformat()}"
                )
        else:
            raise _fail(
                f"the {keys.name} provider has one KMS key per sandbox and no KEK of its own; "
                "rotate the key material with KMS (EnableKeyRotation / RotateKeyOnDemand)",
                2,
            )


def _rotate_local(session: _Session, keys: LocalKeyProvider, *, keep_previous: bool) -> None:
    ring_in_secrets = session.settings.local_kek_file is None
    if ring_in_secrets:
        ring = SecretKekRing(session.api, session.settings.namespace)
        now = ring.load()
        if not now.previous:  # else: resume the rotation staged before
            staged = ring.stage(after=now.current_id)
            print(f"kek/{staged.current_id} staged")
            session.record(
                "kek.staged",
                Resource(kind="KeyEncryptionKey", name=staged.current_id),
                {"provider": keys.name, "previousKekIds": list(staged.previous_ids)},
            )
    result = keys.rewrap_all(session.rotated)
    print(f"{result.rewrapped} rewrapped, {result.already_current} already current")
    if result.failed:
        raise _fail(
            f"{len(result.failed)} stored key(s) could not be unwrapped: "
            f"{', '.join(result.failed)}; the previous KEK is kept"
        )
    left = keys.under_previous()
    if left:
        raise _fail(
            f"{len(left)} key(s) are still under a previous KEK ({', '.join(left)}); "
            "run the command again"
        )
    previous = [k for k in keys.kek_ids if k != keys.kek_id]
    if not ring_in_secrets:
        if previous:
            print(
                f"every key is under {keys.kek_id}; remove the previous KEK "
                f"({', '.join(previous)}) from REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE"
            )
        return
    if keep_previous:
        print(f"every key is under {keys.kek_id}; previous KEK kept: {', '.join(previous)}")
        return
    ring = SecretKekRing(session.api, session.settings.namespace)
    dropped = ring.drop_previous(verified=keys.kek_id)
    session.record(
        "kek.retired",
        Resource(kind="KeyEncryptionKey", name=keys.kek_id),
        {"provider": keys.name, "retiredKekIds": dropped, "currentKekId": keys.kek_id},
    )
    for kek in dropped:
        print(f"kek/{kek} deleted")


@app.command("rotate-data-key")
def rotate_data_key(
    sandbox: Annotated[str, typer.Argument(help="Sandbox id, e.g. sbx-<tenant>-<name>.")],
    kubeconfig: _Kubeconfig = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Confirm: volumes written with the old data key cannot be opened with the new.",
        ),
    ] = False,
) -> None:
    """Give one sandbox a new data key and shred the old one (docs/key-custody.md)."""
    validate_sandbox_id(sandbox)
    if not yes:
        raise _fail(
            "a new data key cannot open volumes written with the old one; copy them to "
            "volumes made after the rotation (docs/key-custody.md), then pass --yes",
            2,
        )
    from sandbox.keys.pkcs11 import Pkcs11KeyProvider  # only with pkcs11: loads its binding

    with _session(kubeconfig, "rotate-data-key") as session:
        keys = session.keys
        if not isinstance(keys, LocalKeyProvider | Pkcs11KeyProvider):
            raise _fail(f"the {keys.name} provider cannot rotate a data key on demand", 2)
        old = keys.get(sandbox)
        if old is None:
            raise _fail(f"sandbox {sandbox!r} has no key")
        new = keys.rotate_data_key(sandbox)
        session.record(
            "key.rotated",
            Resource(kind="Key", name=new.key_id, sandbox=sandbox),
            {
                "provider": keys.name,
                "scope": "data-key",
                "oldKeyId": old.key_id,
                "newKeyId": new.key_id,
            },
        )
        print(f"key/{new.key_id} rotated ({sandbox}: {old.key_id} -> {new.key_id})")
