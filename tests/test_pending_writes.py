"""Pending disk writes and the wait for them before the kernel probe times the CPU."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from app.hardware.pending_writes import pending_write_bytes, settle_pending_writes

MEMINFO = """MemTotal:       24576000 kB
Dirty:            524288 kB
Writeback:         16384 kB
WritebackTmp:          0 kB
"""


def test_pending_writes_are_dirty_and_writeback_pages(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(MEMINFO)
    assert pending_write_bytes(meminfo) == (524288 + 16384) * 1024  # not WritebackTmp
    assert pending_write_bytes(tmp_path / "absent") is None
    meminfo.write_text("MemTotal: 1 kB\n")
    assert pending_write_bytes(meminfo) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/meminfo is Linux's")
def test_this_linux_machine_says_how_much_is_pending() -> None:
    assert isinstance(pending_write_bytes(), int)


class Disk:
    """Pending bytes that the flush (on its own thread) writes out a chunk per read."""

    def __init__(self, pending: int, chunk: int) -> None:
        self.pending, self.chunk = pending, chunk
        self.flushing = threading.Event()

    def read(self) -> int:
        if self.flushing.is_set():
            self.pending = max(0, self.pending - self.chunk)
        return self.pending

    def flush(self) -> None:
        self.flushing.set()


def test_quiet_already_means_no_flush_and_no_wait() -> None:
    disk, lines = Disk(100 << 20, 0), []
    assert settle_pending_writes(lines.append, pending=disk.read, flush=disk.flush)
    assert lines == [] and not disk.flushing.is_set()


def test_it_flushes_and_waits_until_the_writes_are_out() -> None:
    disk, lines = Disk(17 << 30, 4 << 30), []
    assert settle_pending_writes(lines.append, pending=disk.read, flush=disk.flush, wait_s=10)
    assert disk.flushing.is_set() and disk.pending <= 256 << 20
    assert lines == ["waiting for 18.3 GB of pending disk writes (writing them out takes the CPU "
                     "time the timing measures)"]


def test_a_drive_too_slow_or_a_cancel_ends_the_wait_unquiet() -> None:
    slow = Disk(17 << 30, 1 << 20)
    assert not settle_pending_writes(pending=slow.read, flush=slow.flush, wait_s=0.6)
    cancel = threading.Event()
    cancel.set()
    assert not settle_pending_writes(cancelled=cancel.is_set, pending=slow.read, flush=slow.flush, wait_s=60)
