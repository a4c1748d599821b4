"""The log served as C2SP tlog-tiles, read and checked by Go's reference tile reader.

``tools/interop/tiles_test.go`` fetches the checkpoint and opens it with
``golang.org/x/mod/sumdb/note``, reads every hash tile through ``tlog.TileHashReader``
(which checks each tile against the checkpoint's root) and proves every entry of every
entry bundle included with ``tlog.ProveRecord`` / ``tlog.CheckRecord``. The log has 600
entries: two full tiles and one partial tile at level 0, a partial one at level 1.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from audit.log import AuditLog
from audit.note import Signer
from audit.service import AccessPolicy, create_app, token_digest
from tests.audit.test_interop_go import INTEROP, _go
from tests.audit_access.conftest import event
from tests.servers import serve_app

ORIGIN = "audit.regsandbox.test/tiles"
TOKEN = "a-whole-log-reader-token"


def test_go_reads_and_verifies_the_tiles_against_the_checkpoint(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    log = AuditLog.create(tmp_path / "log", ORIGIN, signer)
    try:
        log.append_batch([event("bank" if n % 3 else None, n) for n in range(600)])
        log.publish_checkpoint()
        policy = AccessPolicy(writers={}, readers={token_digest(TOKEN): "mirror"})
        with serve_app(create_app(log, policy)) as url:
            # No token, no tiles.
            assert httpx.get(f"{url}/tlog/tile/0/000", timeout=10).status_code == 401
            env = {
                **os.environ,
                "GOFLAGS": "-mod=mod",
                "REGSANDBOX_TILES_URL": f"{url}/tlog",
                "REGSANDBOX_TILES_TOKEN": TOKEN,
                "REGSANDBOX_TILES_VKEY": signer.verifier.vkey,
            }
            result = subprocess.run(
                [_go(), "test", "-count=1", "-run", "TestTiles", "-v", "./..."],
                cwd=INTEROP,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
    finally:
        log.close()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "--- PASS: TestTiles" in output, output
    assert "verified 600 entries" in output, output
