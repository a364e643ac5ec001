"""Where a stage's wall time goes, written as a DVC metrics file (docs/benchmarks.md "Benchmarks: per-stage time").

``startup_s`` is the time from the process's start to the stage's own code (interpreter, imports,
params validation); ``wall_s`` runs to the end of the stage; named sections (the backbone forward in
``extract``) are summed with :func:`section`, so ``wall_s`` minus the forward is the pipeline's overhead.
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

_SECTIONS: defaultdict[str, float] = defaultdict(float)
_IMPORTED = time.monotonic()


def process_age() -> float:
    """Seconds since this process started: from /proc on Linux, else since this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


@contextmanager
def section(name: str) -> Iterator[None]:
    """Add the wall time of the enclosed block to section ``name`` (``<name>_s`` in the metrics)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        _SECTIONS[name] += time.perf_counter() - t


def sections() -> dict[str, float]:
    return {f"{k}_s": round(v, 3) for k, v in _SECTIONS.items()}
