"""glibc malloc settings that keep a long-running sidecar's RSS flat.

The sidecar does not leak at the Python level (tracemalloc is flat across mass reconnects), yet under
glibc's defaults RSS climbed by megabytes at every reconnect wave, where a few hundred books
arrive at once in frames of a few hundred kB. Three allocator behaviours did it, each measured in
the soak:

* every new socket thread may get a fresh malloc arena (up to 8 per core) that keeps the memory
  it once touched; this process is GIL-bound, so extra arenas buy no parallelism;
* freeing one large frame raises glibc's mmap threshold for good, so later large frames come from
  the heap and fragment it instead of being mapped and unmapped;
* freed heap pages inside an arena are only returned by ``malloc_trim``.

So: two arenas, a fixed mmap threshold, and a periodic trim (the main loop calls ``trim``). An
operator's own ``MALLOC_*`` environment variables win over the first two. On other C libraries
(musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import time

log = logging.getLogger("sidecar.shell.allocator")

M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>
M_ARENA_MAX = -8
ARENA_MAX = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's own initial value, but fixed: no dynamic raising

_libc: ctypes.CDLL | None = None


def tune() -> bool:
    """Apply the settings once at start-up, before the worker threads exist."""
    global _libc
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        version, mallopt, trim = libc.gnu_get_libc_version, libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no gnu_get_libc_version)
        return False
    version.restype = ctypes.c_char_p
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    trim.argtypes = [ctypes.c_size_t]
    applied = []
    if "MALLOC_ARENA_MAX" not in os.environ and mallopt(M_ARENA_MAX, ARENA_MAX) == 1:
        applied.append(f"{ARENA_MAX} arenas")
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
        applied.append(f"mmap threshold {MMAP_THRESHOLD // 1024} KiB")
    _libc = libc
    log.info(
        "glibc %s malloc: %s; free pages trimmed periodically",
        (version() or b"?").decode(),
        ", ".join(applied) or "MALLOC_* from the environment",
    )
    return True


def trim() -> float:
    """Return free heap pages to the kernel; seconds it took (0.0 where unsupported)."""
    if _libc is None:
        return 0.0
    started = time.perf_counter()
    _libc.malloc_trim(0)
    return time.perf_counter() - started
