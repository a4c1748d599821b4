"""The ``local`` provider's KEK from a file mounted from outside the cluster it protects.

Issue 17: "with ``local``, the KEK is not stored in the cluster it protects (a file or
external Secret source the operator mounts)". With ``REGSANDBOX_LOCAL_KEK_FILE`` set, the
operator takes the KEK from that file and never creates the in-cluster ``regsandbox-kek``
Secret; a bad file stops it with an error that names the file and never its content.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from operators.settings import OperatorSettings
from operators.wiring import key_provider
from sandbox.keys import KeyProviderError
from sandbox.keys.local import KEK_BYTES, LocalKeyProvider, kek_id, read_kek_file
from sandbox.keys.secret_store import KEK_SECRET
from sandbox.kube.apply import apply


def _settings(**values: object) -> OperatorSettings:
    base: dict[str, object] = {
        "cluster_region": "onprem:lu-national-1",
        "cluster_jurisdiction": "LU",
    }
    return OperatorSettings(**(base | values))  # type: ignore[arg-type]


def test_a_base64_kek_file_is_read(tmp_path: Path) -> None:
    kek = secrets.token_bytes(KEK_BYTES)
    path = tmp_path / "kek"
    path.write_text("\n  " + base64.b64encode(kek).decode() + "\n")
    assert read_kek_file(path) == kek


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (base64.b64encode(secrets.token_bytes(16)), "holds 16 bytes"),
        (base64.b64encode(secrets.token_bytes(48)), "holds 48 bytes"),
        (b"not base64 at all!", "is not base64"),
        (secrets.token_bytes(KEK_BYTES), "is not base64"),  # raw bytes, not encoded
        (b"", "holds 0 bytes"),
    ],
)
def test_a_bad_kek_file_is_refused_naming_the_file_not_its_content(
    tmp_path: Path, content: bytes, complaint: str
) -> None:
    path = tmp_path / "kek"
    path.write_bytes(content)
    with pytest.raises(KeyProviderError) as raised:
        read_kek_file(path)
    message = str(raised.value)
    assert str(path) in message
    assert complaint in message
    if content.strip():
        assert content.strip().decode(errors="replace")[:12] not in message


def test_a_missing_kek_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError, match="cannot read the local KEK file"):
        read_kek_file(tmp_path / "absent")


def test_a_kek_file_with_another_provider_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="local_kek_file"):
        _settings(
            key_provider="pkcs11",
            pkcs11_module=tmp_path / "lib.so",
            pkcs11_token_label="t",
            pkcs11_pin_file=tmp_path / "pin",
            local_kek_file=tmp_path / "kek",
        )


@pytest.mark.integration
def test_the_operator_uses_the_file_and_keeps_no_kek_in_the_cluster(
    admin_api: client.ApiClient, tmp_path: Path
) -> None:
    namespace = f"kek-file-{secrets.token_hex(3)}"
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kek = secrets.token_bytes(KEK_BYTES)
    path = tmp_path / "kek"
    path.write_text(base64.b64encode(kek).decode())
    try:
        provider = key_provider(_settings(namespace=namespace, local_kek_file=path), admin_api)
        assert isinstance(provider, LocalKeyProvider)
        assert provider.kek_id == kek_id(kek)
        sandbox = f"sbx-{secrets.token_hex(4)}"
        ref = provider.create(sandbox, "onprem:lu-national-1", {})
        assert len(provider.data_key(sandbox)) == 32
        # The wrapped key is in the cluster; the KEK that unwraps it is not.
        with pytest.raises(ApiException) as absent:
            client.CoreV1Api(admin_api).read_namespaced_secret(KEK_SECRET, namespace)
        assert absent.value.status == 404
        # Another KEK cannot unwrap what this one wrapped.
        other = tmp_path / "other"
        other.write_text(base64.b64encode(secrets.token_bytes(KEK_BYTES)).decode())
        stranger = key_provider(_settings(namespace=namespace, local_kek_file=other), admin_api)
        assert isinstance(stranger, LocalKeyProvider)
        with pytest.raises(KeyProviderError):
            stranger.data_key(sandbox)
        assert provider.destroy(sandbox).key_id == ref.key_id
    finally:
        client.CoreV1Api(admin_api).delete_namespace(namespace)
