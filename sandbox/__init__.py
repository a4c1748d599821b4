"""regsandbox: confidential-data regulatory sandboxes on Kubernetes.

The ``sandbox`` package is the domain library: API models, policy engines, keys,
storage, the dataset gateway, the local development control plane and the CLI.
"""

__all__ = ["__version__"]

__version__ = "0.1.0.dev0"
