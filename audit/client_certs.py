"""Readers identified by a verified TLS client certificate, as kube-apiserver maps them.

Where the audit service terminates TLS itself, it may be given a client CA bundle (for
example the cluster's own ``--client-ca-file``). The TLS handshake then verifies any
certificate a client presents against that bundle — chain, validity period, purpose —
and refuses the connection if it fails, so an unknown or expired certificate never
reaches a route. A client that presents none goes on to the bearer-token path.

The server hands the verified chain to the app in the ASGI TLS extension
(``scope["extensions"]["tls"]``: ``client_cert_chain``, leaf first, PEM, and
``client_cert_error``, ``None`` when verification passed). :func:`certificate_reader`
maps the leaf as kube-apiserver does: the subject's common name (CN) is the user, each
organisation (O) a group, plus ``system:authenticated``. That reader is then authorised
like any other, with the same SubjectAccessReview, so one RoleBinding to the
``regsandbox-tenant-auditor`` ClusterRole serves a token and a certificate alike.

One difference: the group ``system:masters``, which kube-apiserver lets past every
authorizer (a SubjectAccessReview naming it is always allowed), is dropped. A certificate
names its groups itself, and the service may be given a CA other than the cluster's, so
what a certificate reads is always what RBAC bindings grant, and shows in them.
Trust in the CA is otherwise whole for reads: a certificate it signs is that user, as
it would be to kube-apiserver. It is never trusted to write: a certificate appends
nothing, even naming a Kubernetes writer (writers append with their token, which the
API server vouches for). Give the service the cluster's client CA, or one whose every
certificate you would accept as that Kubernetes user.

This module only reads what the server verified; it never verifies a chain itself, and
an app whose server does not verify client certificates must not enable them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from audit.access import Reader
from audit.errors import AuditError

__all__ = [
    "AUTHENTICATED_GROUP",
    "PRIVILEGED_GROUP",
    "TLS_EXTENSION",
    "CertificateRefused",
    "certificate_reader",
    "verified_client_reader",
]

TLS_EXTENSION = "tls"
"""Key of the ASGI TLS extension in ``scope["extensions"]``."""
AUTHENTICATED_GROUP = "system:authenticated"
"""The group kube-apiserver adds to every authenticated user."""
PRIVILEGED_GROUP = "system:masters"
"""The group kube-apiserver authorises without RBAC; never taken from a certificate."""


class CertificateRefused(AuditError):  # noqa: N818 - the HTTP meaning, 401
    """A client certificate was presented but names no one we can accept; answer 401."""


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_reader(pem: str | bytes) -> Reader:
    """The reader a verified client certificate names: CN the user, O the groups
    (less :data:`PRIVILEGED_GROUP`).

    Raises:
        CertificateRefused: it cannot be parsed, has no CN, or is not for client auth.
    """
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertificateRefused("the client certificate cannot be parsed") from None
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise CertificateRefused("the client certificate is not for client authentication")
    subject = cert.subject
    names = [_text(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1 or not names[0]:
        raise CertificateRefused("the client certificate must name exactly one user (CN)")
    groups = [_text(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    groups = list(dict.fromkeys(g for g in groups if g and g != PRIVILEGED_GROUP))
    if AUTHENTICATED_GROUP not in groups:
        groups.append(AUTHENTICATED_GROUP)
    return Reader(names[0], tuple(groups))


def verified_client_reader(scope: Mapping[str, Any]) -> Reader | None:
    """The reader of the request's verified client certificate; None if it carries none.

    Raises:
        CertificateRefused: a certificate was presented but the server reports it
            unverified, or it names no acceptable user.
    """
    tls = (scope.get("extensions") or {}).get(TLS_EXTENSION)
    if not tls:
        return None
    chain = list(tls.get("client_cert_chain") or ())
    if not chain:
        return None
    if tls.get("client_cert_error") is not None:
        raise CertificateRefused("the client certificate did not verify")
    return certificate_reader(chain[0])
