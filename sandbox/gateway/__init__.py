"""The dataset gateway: sandbox workloads read granted datasets through it, and only it.

Pods authenticate with a projected ServiceAccount token (audience
``regsandbox-gateway``) checked by TokenReview; the token's namespace names the sandbox,
whose Sandbox status says whether it is Ready, unexpired and granted the dataset. The
gateway streams the object from S3 with credentials only it holds, and records every
request in the audit log before the response completes. The same way, a workload writes
the artifact it wants to export into its own sandbox's outbox, where the export
airlock finds it.

Modules, by job:

- :mod:`~sandbox.gateway.app`: the HTTP API (routes only; each is one call);
- :mod:`~sandbox.gateway.gateway`: the :class:`Gateway` (admission, refusal, the audit
  record before the answer, write slots);
- :mod:`~sandbox.gateway.reads` (listings, HEAD, GET) and
  :mod:`~sandbox.gateway.streaming` (audited streaming of large reads);
- :mod:`~sandbox.gateway.writes` (outbox writes over HTTP) and
  :mod:`~sandbox.gateway.outbox` (the S3 uploads behind them);
- :mod:`~sandbox.gateway.refusals` (each error's status, outcome and reason),
  :mod:`~sandbox.gateway.wire` (response bodies), :mod:`~sandbox.gateway.records`
  (audit events);
- :mod:`~sandbox.gateway.auth` (TokenReview), :mod:`~sandbox.gateway.authz` (grants,
  read from the typed Sandbox status), :mod:`~sandbox.gateway.objectkeys` (S3
  object-key validation), :mod:`~sandbox.gateway.s3` (S3 reads of dataset objects);
- the S3 surface: :mod:`~sandbox.gateway.s3api` (S3 requests through the same steps),
  :mod:`~sandbox.gateway.s3multipart` (multipart uploads into the outbox),
  :mod:`~sandbox.gateway.sts` (``AssumeRoleWithWebIdentity``: stateless session
  credentials), :mod:`~sandbox.gateway.sigv4` (SigV4 checks with botocore's signer,
  clock skew, replays) and :mod:`~sandbox.gateway.s3xml` (the XML answers);
- :mod:`~sandbox.gateway.settings`, :mod:`~sandbox.gateway.build` and
  :mod:`~sandbox.gateway.rbac` (re-exports :mod:`sandbox.provision.gateway_rbac`).
"""

from sandbox.gateway.app import create_app
from sandbox.gateway.auth import Identity, TokenReviewer
from sandbox.gateway.authz import Grant, GrantResolver
from sandbox.gateway.build import build_gateway
from sandbox.gateway.gateway import Gateway
from sandbox.gateway.outbox import OutboxWriter
from sandbox.gateway.rbac import gateway_rbac
from sandbox.gateway.s3 import Storage
from sandbox.gateway.settings import AUDIENCE, GatewaySettings

__all__ = [
    "AUDIENCE",
    "Gateway",
    "GatewaySettings",
    "Grant",
    "GrantResolver",
    "Identity",
    "OutboxWriter",
    "Storage",
    "TokenReviewer",
    "build_gateway",
    "create_app",
    "gateway_rbac",
]
