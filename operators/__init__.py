"""kopf handlers: thin glue from Kubernetes events to :mod:`sandbox` functions."""

__all__: list[str] = []
