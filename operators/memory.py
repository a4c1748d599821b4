"""Keep the operator's resident memory close to what it holds.

glibc gives each thread that allocates concurrently an arena of its own, up to eight per
core. The operator runs a pool of handler threads and a watch thread per followed kind;
every larger Python object (a response body, a dict's table) is allocated from one of
those arenas, and memory freed in one arena is not reused by another, so the peak
resident size grows with the number of threads rather than with what is kept. Two
arenas are plenty for threads that take turns under the GIL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MALLOC_ARENAS", "limit_malloc_arenas"]

MALLOC_ARENAS = 2
"""Arenas the operator's threads share (glibc's ``M_ARENA_MAX``)."""

_M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``, before the threads start; whether it did.

    A ``MALLOC_ARENA_MAX`` set in the environment wins (glibc has read it already). On a
    C library without ``mallopt`` (musl) nothing changes.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas) == 1)
