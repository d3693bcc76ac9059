"""Process-wide settings for a run's process, applied once when the flows package is imported.

Memory: a run journals every answer as a small Parquet file from worker threads. pyarrow's default
mimalloc pool and glibc's per-thread malloc arenas each keep what those threads freed, so a run's RSS
crept up by ~20 MB over 1,200 items (benchmarks/throughput.py). The system allocator with at most two
arenas keeps it flat. Either is left alone when the environment already chooses
(ARROW_DEFAULT_MEMORY_POOL, MALLOC_ARENA_MAX).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter


def tune_memory(arenas: int = 2) -> None:
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        # Arrow's C++ parts (the Parquet writer among them) pick their pool from the environment once, at
        # first use; pa.set_memory_pool reaches only pyarrow's Python-facing calls, hence both.
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
        if "pyarrow" in sys.modules:
            import pyarrow as pa

            pa.set_memory_pool(pa.system_memory_pool())
    if "MALLOC_ARENA_MAX" not in os.environ and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
        except (OSError, AttributeError):  # not glibc: nothing to tune
            pass
