"""The development PKI issues what kube-apiserver's x509 authenticator expects."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox.devenv.kubeconfig import write_kubeconfig
from sandbox.devenv.pki import CertificateAuthority


def test_client_certificate_carries_user_and_groups() -> None:
    ca = CertificateAuthority.create()
    issued = ca.issue_client("alice", ["tenant-a", "reviewers"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["alice"]
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["tenant-a", "reviewers"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(ca.cert)


def test_server_certificate_names_loopback() -> None:
    ca = CertificateAuthority.create()
    cert = x509.load_pem_x509_certificate(
        ca.issue_server("kube-apiserver", ["localhost"], ["127.0.0.1"]).cert_pem
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_empty_user_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty user"):
        CertificateAuthority.create().issue_client("")


def test_ca_round_trips_and_kubeconfig_is_private(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    ca.save(tmp_path)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(tmp_path)
    assert loaded.cert == ca.cert
    path = write_kubeconfig(
        tmp_path / "u.kubeconfig", "https://127.0.0.1:6443", ca.cert_pem, "u", ca.issue_client("u")
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert doc["current-context"] == "u@regsandbox-dev"
