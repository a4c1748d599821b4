"""Audit log readers from Kubernetes: TokenReview says who, SubjectAccessReview says what.

A compliance officer reads the audit log with the identity the cluster already gives
them. The audit service sends their bearer token to the API server in a TokenReview
carrying the service's own audience (default :data:`AUDIENCE`), so a token minted for
something else — the dataset gateway, the API server itself — is refused. It then asks,
with a SubjectAccessReview for that user, groups, UID and extra, whether they may ``get``
or ``list`` the resource :data:`RESOURCE` in group :data:`GROUP`:

- in the tenant's home namespace (``tenant-<name>``) for one tenant's entries, so a
  RoleBinding there to the chart's ``regsandbox-tenant-auditor`` ClusterRole grants it;
- cluster-scoped for the whole log, which only a ClusterRoleBinding (the chart's
  ``regsandbox-platform-auditor``) grants.

``auditentries`` is not served by any API (there is no such CRD): RBAC authorises
resources by name, whether or not they exist, which is what lets platform engineers
grant audit access with ordinary Roles and RoleBindings. The service's own
ServiceAccount needs only ``create`` on ``tokenreviews`` and ``subjectaccessreviews``.
Wrap this in :class:`audit.access.CachedAuthority` to reuse answers briefly.
"""

from __future__ import annotations

from collections.abc import Callable

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from audit.access import AccessUnavailable, Reader, Scope, Verb

__all__ = ["AUDIENCE", "GROUP", "RESOURCE", "KubernetesReaders"]

AUDIENCE = "regsandbox-audit"
"""Token audience the audit service accepts by default."""
GROUP = "regsandbox.io"
"""API group of the authorised resource."""
RESOURCE = "auditentries"
"""Resource whose ``get``/``list`` rights grant reading audit entries."""


class KubernetesReaders:
    """A :class:`audit.access.ReaderAuthority` asking the API server; thread-safe."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace_of: Callable[[str], str],
        *,
        audience: str = AUDIENCE,
        timeout: float = 5.0,
    ) -> None:
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
        self._namespace_of = namespace_of
        self.audience = audience
        """The audience every accepted token must carry."""
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"KubernetesReaders(audience={self.audience!r})"

    def authenticate(self, token: str) -> Reader | None:
        """The user behind ``token`` if the API server accepts it for our audience."""
        body = client.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience]),
        )
        try:
            result = self._authn.create_token_review(body, _request_timeout=self._timeout)
        except ApiException as exc:
            # Never echo the exception's text: it could carry the request.
            raise AccessUnavailable(f"TokenReview failed with HTTP {exc.status}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise AccessUnavailable(f"TokenReview failed: {type(exc).__name__}") from None
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            return None
        if self.audience not in (status.audiences or []):
            return None
        user = status.user
        if not user.username:
            return None
        extra = {key: tuple(values or ()) for key, values in (user.extra or {}).items()}
        return Reader(user.username, tuple(user.groups or ()), user.uid or None, extra)

    def may_read(self, reader: Reader, scope: Scope, verb: Verb) -> bool:
        """Whether RBAC lets ``reader`` ``verb`` auditentries in ``scope``."""
        namespace = None if scope.tenant is None else self._namespace_of(scope.tenant)
        review = client.V1SubjectAccessReview(
            api_version="authorization.k8s.io/v1",
            kind="SubjectAccessReview",
            spec=client.V1SubjectAccessReviewSpec(
                user=reader.name,
                groups=list(reader.groups),
                uid=reader.uid,
                extra={key: list(values) for key, values in reader.extra.items()} or None,
                resource_attributes=client.V1ResourceAttributes(
                    group=GROUP, resource=RESOURCE, verb=verb, namespace=namespace
                ),
            ),
        )
        try:
            result = self._authz.create_subject_access_review(
                review, _request_timeout=self._timeout
            )
        except ApiException as exc:
            raise AccessUnavailable(f"SubjectAccessReview failed with HTTP {exc.status}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise AccessUnavailable(f"SubjectAccessReview failed: {type(exc).__name__}") from None
        status = result.status
        return bool(status is not None and status.allowed and not status.denied)
