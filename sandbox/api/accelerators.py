"""Accelerators: the extended resources (GPUs, MIG slices, NPUs) a sandbox asks for by name.

Device plugins advertise accelerators on nodes as *extended resources*, named
``<domain>/<name>`` outside ``kubernetes.io`` (``nvidia.com/gpu``,
``nvidia.com/mig-3g.40gb``, ``amd.com/gpu``). Kubernetes lets a ResourceQuota limit
an extended resource only as ``requests.<name>`` (extended resources are never
overcommitted, so requests and limits are equal), and only when the quota names it:
a resource the quota does not name is not limited at all. That is why the platform
declares every accelerator it offers (operator setting ``accelerator_resources``)
and each sandbox's quota names all of them, ``0`` unless granted.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from kubernetes.utils import parse_quantity
from pydantic import AfterValidator, Field, WithJsonSchema

__all__ = [
    "DEFAULT_ACCELERATORS",
    "EXTENDED_RESOURCE_PATTERN",
    "NVIDIA_GPU",
    "AcceleratorCounts",
    "check_extended_resource",
    "gpu_once_rule",
    "with_gpu",
]

NVIDIA_GPU = "nvidia.com/gpu"
"""The resource the ``gpu`` shorthand of sandboxes and tenants stands for."""

DEFAULT_ACCELERATORS: tuple[str, ...] = (
    NVIDIA_GPU,
    # NVIDIA time-slicing / MPS with renamed resources.
    "nvidia.com/gpu.shared",
    # MIG profiles (the device plugin's "mixed" strategy): A30 24GB, A100 40GB,
    # A100/H100 80GB, H100 NVL 94GB, GH200 96GB, H200 141GB, B200 180GB.
    "nvidia.com/mig-1g.6gb",
    "nvidia.com/mig-2g.12gb",
    "nvidia.com/mig-4g.24gb",
    "nvidia.com/mig-1g.5gb",
    "nvidia.com/mig-1g.10gb",
    "nvidia.com/mig-2g.10gb",
    "nvidia.com/mig-3g.20gb",
    "nvidia.com/mig-4g.20gb",
    "nvidia.com/mig-7g.40gb",
    "nvidia.com/mig-1g.20gb",
    "nvidia.com/mig-2g.20gb",
    "nvidia.com/mig-3g.40gb",
    "nvidia.com/mig-4g.40gb",
    "nvidia.com/mig-7g.80gb",
    "nvidia.com/mig-1g.12gb",
    "nvidia.com/mig-1g.24gb",
    "nvidia.com/mig-2g.24gb",
    "nvidia.com/mig-3g.47gb",
    "nvidia.com/mig-4g.47gb",
    "nvidia.com/mig-7g.94gb",
    "nvidia.com/mig-3g.48gb",
    "nvidia.com/mig-4g.48gb",
    "nvidia.com/mig-7g.96gb",
    "nvidia.com/mig-1g.18gb",
    "nvidia.com/mig-1g.35gb",
    "nvidia.com/mig-2g.35gb",
    "nvidia.com/mig-3g.71gb",
    "nvidia.com/mig-4g.71gb",
    "nvidia.com/mig-7g.141gb",
    "nvidia.com/mig-1g.23gb",
    "nvidia.com/mig-1g.45gb",
    "nvidia.com/mig-2g.45gb",
    "nvidia.com/mig-3g.90gb",
    "nvidia.com/mig-4g.90gb",
    "nvidia.com/mig-7g.180gb",
    "amd.com/gpu",
    "gpu.intel.com/i915",
    "gpu.intel.com/xe",
    "habana.ai/gaudi",
    "aws.amazon.com/neuron",
    "aws.amazon.com/neuroncore",
    "aws.amazon.com/neurondevice",
    "google.com/tpu",
)
"""What the platform offers unless its settings say otherwise: the usual device plugins'
resource names. A cluster whose nodes advertise another accelerator must add it."""

EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
"""``<DNS subdomain>/<name>``, the form of a fully qualified extended resource name."""

_NAME = re.compile(EXTENDED_RESOURCE_PATTERN)


def check_extended_resource(name: str) -> str:
    """``name`` if it is an extended resource name a quota can limit.

    Raises:
        ValueError: not ``<domain>/<name>``, or a native (``kubernetes.io``) resource.
    """
    if not _NAME.match(name) or len(name) > 253 + 1 + 63:
        raise ValueError(
            f"{name!r} is not an extended resource name; accelerators are named "
            "<domain>/<name>, e.g. nvidia.com/mig-3g.40gb"
        )
    if "kubernetes.io/" in name:
        raise ValueError(f"{name!r} is a native Kubernetes resource, not an accelerator")
    return name


def _check_names(counts: dict[str, int]) -> dict[str, int]:
    for name in counts:
        check_extended_resource(name)
    return counts


_CEL_NAMES = (
    f"self.all(k, k.matches(r'{EXTENDED_RESOURCE_PATTERN}') && !k.contains('kubernetes.io/'))"
)

AcceleratorCounts = Annotated[
    dict[str, Annotated[int, Field(ge=0)]],
    Field(max_length=16),
    AfterValidator(_check_names),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 0},
            "maxProperties": 16,
            "x-kubernetes-validations": [
                {
                    "rule": _CEL_NAMES,
                    "message": "accelerators are named <domain>/<name>, e.g. nvidia.com/gpu",
                }
            ],
        }
    ),
]
"""Whole numbers of accelerators by extended resource name, e.g.
``{"nvidia.com/mig-3g.40gb": 2}``."""


def gpu_once_rule(*, zero_is_unset: bool) -> dict[str, Any]:
    """The CRD validation rule refusing what :func:`with_gpu` refuses, for the API server."""
    unset = "!has(self.gpu)"
    if zero_is_unset:
        unset += " || (type(self.gpu) == int ? self.gpu == 0 : self.gpu == '0')"
    return {
        "rule": f"!has(self.accelerators) || !('{NVIDIA_GPU}' in self.accelerators) || {unset}",
        "message": (
            f"gpu is the shorthand for accelerators[{NVIDIA_GPU}]; set one of them, not both"
        ),
    }


def with_gpu(gpu: str | None, counts: dict[str, int], *, zero_is_unset: bool) -> dict[str, int]:
    """``counts`` with the ``gpu`` shorthand folded in as :data:`NVIDIA_GPU`.

    ``zero_is_unset``: a ``gpu`` of 0 is the default (a sandbox's request), not a
    value that could conflict with ``counts`` (a tenant's ceiling of 0 is a value).

    Raises:
        ValueError: ``gpu`` is not a whole number, or both ``gpu`` and
            ``accelerators["nvidia.com/gpu"]`` are set.
    """
    merged = dict(counts)
    if gpu is None:
        return merged
    amount = parse_quantity(gpu)
    if amount != amount.to_integral_value():
        raise ValueError(f"gpu must be a whole number of GPUs, not {gpu!r}")
    if NVIDIA_GPU in merged:
        if amount == 0 and zero_is_unset:
            return merged
        raise ValueError(
            f"gpu is the shorthand for accelerators[{NVIDIA_GPU!r}]; set one of them, not both"
        )
    merged[NVIDIA_GPU] = int(amount)
    return merged
