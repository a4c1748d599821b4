"""``sandboxctl audit … --server``: a compliance officer reads and verifies remotely.

Against the audit service of ``conftest.setup`` (real TokenReview and RBAC): the CLI uses
the caller's token (``--token-file`` or the kubeconfig's), checks every checkpoint with
the published verifier key, and a tenant auditor reads their tenant's slice only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from sandbox.cli import app
from tests.audit_access.conftest import Setup, event, token_kubeconfig

pytestmark = pytest.mark.integration

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["audit", *args])
    return result.exit_code, result.stdout, result.stderr


def _token(setup: Setup, who: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{who}.token"
    path.write_text(setup.tokens[who] + "\n")
    return path


def test_a_tenant_auditor_lists_verifies_and_proves_their_slice(
    setup: Setup, tmp_path: Path
) -> None:
    a = setup.tenant_a
    token = str(_token(setup, "tenant-a", tmp_path))
    remote = ["--server", setup.url, "--vkey", setup.signer.verifier.vkey, "--token-file", token]
    code, out, err = run("log", *remote, "--tenant", a, "-o", "json")
    assert code == 0, err
    listed = json.loads(out)
    assert [e["index"] for e in listed] == setup.indices[a][: len(listed)]
    assert {e["resource"]["tenant"] for e in listed} == {a}

    saved = tmp_path / "checkpoint"
    code, out, err = run("verify", *remote, "--tenant", a, "--save-checkpoint", str(saved))
    assert code == 0, err
    assert f"tenant {a} verified" in out
    before = open_checkpoint(saved.read_bytes(), [setup.signer.verifier])

    setup.log.append(event(a, 1000))
    setup.log.publish_checkpoint()
    code, out, err = run("verify", *remote, "--tenant", a, "--trusted", str(saved))
    assert code == 0, err
    assert f"extends {before.size}" in out
    code, out, err = run("consistency", *remote, "--tenant", a, "--old", str(saved))
    assert code == 0, err
    assert "extends size" in err

    mine, theirs = setup.indices[a][0], setup.indices[setup.tenant_b][0]
    code, out, err = run("prove", *remote, "--tenant", a, "--index", str(mine))
    assert code == 0, err
    assert out.startswith("c2sp.org/tlog-proof@v1")
    code, _, err = run("prove", *remote, "--tenant", a, "--index", str(theirs))
    assert code == 1
    assert "403" in err


def test_a_saved_checkpoint_the_log_does_not_extend_fails_verification(
    setup: Setup, tmp_path: Path
) -> None:
    token = str(_token(setup, "tenant-a", tmp_path))
    remote = ["--server", setup.url, "--vkey", setup.signer.verifier.vkey, "--token-file", token]
    # A checkpoint the log's own key signed for another history (a fork).
    forked = tmp_path / "forked"
    forked.write_bytes(
        sign_checkpoint(Checkpoint(setup.log.origin, 3, b"\x07" * 32), [setup.signer])
    )
    code, _, err = run("verify", *remote, "--tenant", setup.tenant_a, "--trusted", str(forked))
    assert code == 3, err
    # A key other than the published one: nothing the service signs is trusted.
    from audit.note import Signer

    other = Signer.generate(setup.log.origin).verifier.vkey
    code, _, err = run(
        "log",
        "--server",
        setup.url,
        "--vkey",
        other,
        "--token-file",
        token,
        "--tenant",
        setup.tenant_a,
    )
    assert code == 3, err


def test_the_kubeconfig_token_is_used_and_the_whole_log_needs_the_platform_role(
    setup: Setup, tmp_path: Path, control_plane: object
) -> None:
    from sandbox.devenv.controlplane import ControlPlane

    assert isinstance(control_plane, ControlPlane)
    vkey = setup.signer.verifier.vkey
    platform = token_kubeconfig(control_plane, setup.tokens["platform"], tmp_path / "platform")
    code, out, err = run(
        "verify", "--server", setup.url, "--vkey", vkey, "--kubeconfig", str(platform)
    )
    assert code == 0, err
    assert "of the whole log verified" in out
    tenant = token_kubeconfig(control_plane, setup.tokens["tenant-a"], tmp_path / "tenant")
    code, _, err = run("verify", "--server", setup.url, "--vkey", vkey, "--kubeconfig", str(tenant))
    assert code == 1
    assert "403" in err
    code, _, err = run("log", "--server", setup.url, "--kubeconfig", str(platform))
    assert code == 2
    assert "--vkey" in err
    cert_user = control_plane.add_user(f"cert-{setup.suffix}", [])
    code, _, err = run("log", "--server", setup.url, "--vkey", vkey, "--kubeconfig", str(cert_user))
    assert code == 2
    assert "--token-file" in err


def test_a_platform_auditor_takes_a_snapshot_that_verifies_offline(
    setup: Setup, tmp_path: Path
) -> None:
    vkey = setup.signer.verifier.vkey
    platform = str(_token(setup, "platform", tmp_path))
    copy = tmp_path / "copy"
    remote = ["--server", setup.url, "--vkey", vkey]
    code, out, err = run("snapshot", *remote, "--token-file", platform, "--to", str(copy))
    assert code == 0, err
    code, out, err = run("verify", "--log", str(copy), "--vkey", vkey)
    assert code == 0, err
    assert f"ok: {setup.log.checkpoint.size} entries verified" in out
    tenant = str(_token(setup, "tenant-a", tmp_path))
    code, _, err = run("snapshot", *remote, "--token-file", tenant, "--to", str(tmp_path / "no"))
    assert code == 1
    assert "403" in err
