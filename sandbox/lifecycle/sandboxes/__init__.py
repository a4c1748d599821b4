"""The life of a Sandbox: decide, provision, keep isolated, expire, tear down.

Each function takes the Sandbox object as the API server sent it and returns a
:class:`~sandbox.lifecycle.result.StepResult`; none of them holds state between calls,
so a crash at any point is recovered by calling the same function again (every write
is a server-side apply or an idempotent delete, and keys are created and destroyed
idempotently). Each builds its status in a
:class:`~sandbox.lifecycle.sandboxes.step.SandboxStep`, so audit events are durable
before the status that shows them.

Modules by job: :mod:`.provision` (decide and provision), :mod:`.desired` (every
object and the order they are written in), :mod:`.drift` (restore a Ready sandbox),
:mod:`.grant_refresh` (grants decided again when a Dataset changes), :mod:`.teardown`
(quarantine, expiry, teardown and key destruction), :mod:`.step` (the step and what
every job reads first).
"""

from sandbox.lifecycle.objects import tenant_of
from sandbox.lifecycle.sandboxes.desired import desired_objects
from sandbox.lifecycle.sandboxes.drift import correct_drift
from sandbox.lifecycle.sandboxes.grant_refresh import refresh_grants
from sandbox.lifecycle.sandboxes.provision import provision_sandbox
from sandbox.lifecycle.sandboxes.step import expires_at
from sandbox.lifecycle.sandboxes.teardown import (
    ANNOTATION_KEY_AUDITED,
    expire_sandbox,
    quarantine,
    teardown_sandbox,
)

__all__ = [
    "ANNOTATION_KEY_AUDITED",
    "correct_drift",
    "desired_objects",
    "expire_sandbox",
    "expires_at",
    "provision_sandbox",
    "quarantine",
    "refresh_grants",
    "teardown_sandbox",
    "tenant_of",
]
