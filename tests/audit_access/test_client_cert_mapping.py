"""How a verified client certificate names a reader (as kube-apiserver maps it)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from audit.access import Reader
from audit.client_certs import (
    AUTHENTICATED_GROUP,
    CertificateRefused,
    certificate_reader,
    verified_client_reader,
)
from audit.service import AccessPolicy
from sandbox.devenv.pki import CertificateAuthority

CA = CertificateAuthority.create("mapping-test")


def _pem(names: list[tuple[x509.ObjectIdentifier, str]], usage: x509.ObjectIdentifier) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, v) for oid, v in names]))
        .issuer_name(CA.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CA.cert.not_valid_before_utc)
        .not_valid_after(CA.cert.not_valid_after_utc)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(CA.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_cn_is_the_user_and_each_o_a_group_plus_authenticated() -> None:
    pem = CA.issue_client("claire.muller", ["bank-audit", "cssf-liaison"]).cert_pem
    reader = certificate_reader(pem)
    assert reader == Reader("claire.muller", ("bank-audit", "cssf-liaison", AUTHENTICATED_GROUP))
    assert not reader.whole_log


@pytest.mark.parametrize(
    ("names", "usage"),
    [
        ([(NameOID.ORGANIZATION_NAME, "bank-audit")], ExtendedKeyUsageOID.CLIENT_AUTH),
        ([(NameOID.COMMON_NAME, "a"), (NameOID.COMMON_NAME, "b")], ExtendedKeyUsageOID.CLIENT_AUTH),
        ([(NameOID.COMMON_NAME, "audit.example")], ExtendedKeyUsageOID.SERVER_AUTH),
    ],
    ids=["no-cn", "two-cns", "server-only"],
)
def test_a_certificate_naming_no_single_client_user_is_refused(
    names: list[tuple[x509.ObjectIdentifier, str]], usage: x509.ObjectIdentifier
) -> None:
    with pytest.raises(CertificateRefused):
        certificate_reader(_pem(names, usage))


def test_the_tls_extension_is_read_only_when_the_server_verified_the_chain() -> None:
    pem = CA.issue_client("auditor").cert_pem.decode()
    assert verified_client_reader({"type": "http"}) is None
    assert verified_client_reader({"extensions": {"tls": {"client_cert_chain": []}}}) is None
    verified = {"client_cert_chain": [pem], "client_cert_error": None}
    assert verified_client_reader({"extensions": {"tls": verified}}) == Reader(
        "auditor", (AUTHENTICATED_GROUP,)
    )
    failed = {"client_cert_chain": [pem], "client_cert_error": "certificate has expired"}
    with pytest.raises(CertificateRefused):
        verified_client_reader({"extensions": {"tls": failed}})


def test_client_certificates_need_an_authority_to_authorise_them() -> None:
    with pytest.raises(ValueError, match="reader authority"):
        AccessPolicy(writers={}, readers={}, client_certificates=True)
