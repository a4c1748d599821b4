"""Process-wide state of the operator: its settings and the platform built from them."""

from __future__ import annotations

from operators.settings import OperatorSettings
from sandbox.artifacts.outbox import ArtifactStore
from sandbox.lifecycle.platform import Platform

__all__ = ["artifact_store", "configure", "platform", "settings"]

_settings: OperatorSettings | None = None
_platform: Platform | None = None
_store: ArtifactStore | None = None


def configure(
    settings: OperatorSettings,
    built: Platform | None = None,
    store: ArtifactStore | None = None,
) -> None:
    """Install the settings (and, once connected, the platform) for the handlers."""
    global _settings, _platform, _store  # one operator per process, set once at start
    _settings = settings
    _platform = built
    _store = store


def settings() -> OperatorSettings:
    """The settings given to :func:`configure`."""
    if _settings is None:
        raise RuntimeError("the operator was not configured; start it with `sandbox-operator run`")
    return _settings


def platform() -> Platform:
    """The platform built at start-up."""
    if _platform is None:
        raise RuntimeError("the platform is not ready yet")
    return _platform


def artifact_store() -> ArtifactStore | None:
    """The export outbox, or None when exports are not configured."""
    return _store
