"""The operator's threads share two malloc arenas instead of one each (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

_COUNT_ARENAS = """
import ctypes, ctypes.util, sys, tempfile, threading
if sys.argv[1] == "limited":
    from operators.memory import limit_malloc_arenas
    assert limit_malloc_arenas()
kept = []
# All 8 threads alive at once: glibc hands an exited thread's arena to the next new one,
# so threads that ran one after another (a busy machine) would share one arena anyway.
started, done = threading.Barrier(8), threading.Barrier(8)
def allocate():
    started.wait()
    kept.append([bytes(10_000) for _ in range(50)])  # above pymalloc's 512 bytes
    done.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(out.name).read().count("<heap nr="))
"""


def _arenas(mode: str) -> int:
    ran = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},  # no MALLOC_ARENA_MAX from the caller
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    return int(ran.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_info")
def test_threads_share_two_arenas_once_limited() -> None:
    assert _arenas("default") > 2  # the control: one arena per allocating thread
    assert _arenas("limited") <= 2
