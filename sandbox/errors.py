"""The error tree of the :mod:`sandbox` package: one base class, a few specific kinds."""

__all__ = [
    "ConfigurationError",
    "ControlPlaneError",
    "SandboxError",
    "ToolBuildError",
]


class SandboxError(Exception):
    """Base class of every error raised on purpose by :mod:`sandbox`."""


class ConfigurationError(SandboxError):
    """A setting, flag or manifest is invalid; the message says what to change."""


class ControlPlaneError(SandboxError):
    """The local development control plane could not be started, reached or stopped."""


class ToolBuildError(SandboxError):
    """A pinned tool (kube-apiserver, etcd, opa, …) could not be built from Go modules."""
