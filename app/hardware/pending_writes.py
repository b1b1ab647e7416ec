"""Writes the OS still holds in RAM for the disk, and waiting for them before a CPU timing.

A file just written (a downloaded model, a synthetic one) sits in the page cache as dirty pages
that the kernel writes out over the next seconds to minutes; the writing takes CPU time and
interrupts from the cores a timing runs on. On the thirty-second session's H200 host the
kernel probe, started right after a 17 GB model was written, read llama.cpp's CPU kernels at
30 GB/s; the same probe's Q4_0 run half a minute later read 40, and a minute later 56, where
the engine's own decodes implied ~50 (docs/benchmarks.md, "Thirty-second session"). Whether the
write-out caused it was not separated there; waiting for it costs seconds and removes it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
QUIET_BYTES = 256 << 20  # pending writes below this are left to the kernel
WAIT_S = 120.0  # at most this long: a slow drive's backlog is not worth more of the user's time
SYNC: Callable[[], None] = getattr(os, "sync", lambda: None)  # Windows has none (and no /proc)


def pending_write_bytes(meminfo: Path = MEMINFO) -> int | None:
    """Bytes written by programs and not yet on the disk (Linux: Dirty + Writeback of
    /proc/meminfo); None where the OS does not say."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name in ("Dirty", "Writeback") and parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024  # kB
    return sum(fields.values()) if fields else None


def settle_pending_writes(progress: Callable[[str], None] = lambda _line: None,
                          cancelled: Callable[[], bool] = lambda: False, *,
                          quiet_bytes: int = QUIET_BYTES, wait_s: float = WAIT_S,
                          pending: Callable[[], int | None] = pending_write_bytes,
                          flush: Callable[[], None] = SYNC) -> bool:
    """Ask the OS to write out what it holds (``flush``, on its own thread) and wait until under
    ``quiet_bytes`` remain, ``wait_s`` pass or ``cancelled()``. Returns whether it is quiet (True
    also where the OS does not say)."""
    left = pending()
    if left is None or left <= quiet_bytes:
        return True
    progress(f"waiting for {left / 1e9:.1f} GB of pending disk writes (writing them out takes "
             "the CPU time the timing measures)")
    threading.Thread(target=flush, name="moedesk-sync", daemon=True).start()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not cancelled():
        time.sleep(0.25)
        left = pending()
        if left is None or left <= quiet_bytes:
            return True
    return False
