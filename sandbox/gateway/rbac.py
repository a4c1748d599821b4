"""The gateway's identity and RBAC, as planned by :mod:`sandbox.provision.gateway_rbac`.

Re-exported here for the gateway's users; the plan lives with the other RBAC plans so
that the plan layer never imports a server.
"""

from __future__ import annotations

from sandbox.provision.gateway_rbac import GATEWAY_NAME, RULES, gateway_rbac

__all__ = ["GATEWAY_NAME", "RULES", "gateway_rbac"]
