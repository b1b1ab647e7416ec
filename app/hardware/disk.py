"""How fast the drive holding a model reads: a short measured probe, cached per drive.

A model larger than RAM reads part of its routed experts from the SSD for every token, so
decode speed there is set by the drive: by the bytes it gives for reads the size of one expert
at random places, many in flight (NVMe drives give their speed at depth, not one at a time),
which engine patch 0005's parallel reads do. The probe reads an existing file (the model
itself: no test file is written) with O_DIRECT where the file system allows it, so that the
page cache does not answer instead of the drive:

* ``seq_read_bw``: bytes/s of large (4 MiB) reads in order, ``depth`` in flight;
* ``random_read_bw``: bytes/s of ``block_bytes`` reads at random aligned offsets, ``depth``
  in flight (``block_bytes``: one expert's slice);
* ``random_read_bw_1``: the same one at a time (what page faults get, roughly).

Figures are cached in ``app.paths.cache_dir()/bandwidth.json`` under ``"disks"``, by drive
(the file system's device number on this machine) and block size.
"""

from __future__ import annotations

import mmap
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from app.hardware.probe_cache import cache_path, cpu_key, read_cache, write_cache

PROBE_VERSION = 1
ALIGN = 4096  # O_DIRECT's offset, size and buffer alignment on common file systems
SEQ_BLOCK = 4 << 20
DEFAULT_DEPTH = 16  # reads in flight: the engine's I/O threads
DEFAULT_SECONDS = 1.0  # per pattern


@dataclass
class DiskSpeed:
    """Measured read figures of one drive (bytes/s)."""

    seq_read_bw: float
    random_read_bw: float  # block_bytes reads at random offsets, depth in flight
    random_read_bw_1: float  # the same, one at a time
    block_bytes: int
    depth: int
    direct: bool  # O_DIRECT (the drive itself); False: buffered reads (may be cached)
    drive: str = ""  # the cache key: machine and device number
    version: int = PROBE_VERSION


class DiskProbeError(RuntimeError):
    """The file cannot be probed (missing, unreadable or too small)."""


def _open(path: Path) -> tuple[int, bool]:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, flags | direct), True
        except OSError:
            pass  # tmpfs and some overlay file systems refuse O_DIRECT
    return os.open(path, flags), False


def _timed_reads(fd: int, offsets: list[int], size: int, depth: int, seconds: float) -> float:
    """Bytes/s of reads of ``size`` at ``offsets`` (cycled), ``depth`` threads, ~``seconds``."""
    buffers = [mmap.mmap(-1, size) for _ in range(depth)]  # page-aligned, as O_DIRECT needs
    deadline = time.perf_counter() + seconds
    per_thread = [offsets[i::depth] or offsets for i in range(depth)]

    def worker(i: int) -> int:
        done, view, mine = 0, memoryview(buffers[i]), per_thread[i]
        j = 0
        while time.perf_counter() < deadline:
            n = os.preadv(fd, [view], mine[j % len(mine)])
            if n <= 0:
                break
            done += n
            j += 1
        view.release()
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(depth) as pool:
        total = sum(pool.map(worker, range(depth)))
    elapsed = time.perf_counter() - start
    for b in buffers:
        b.close()
    return total / elapsed if elapsed > 0 else 0.0


def measure_disk(path: Path, block_bytes: int = 4 << 20, depth: int = DEFAULT_DEPTH,
                 seconds: float = DEFAULT_SECONDS, seed: int = 0) -> DiskSpeed:
    """Probe the drive under ``path`` (an existing file of at least a few blocks) now."""
    try:
        size = Path(path).stat().st_size
    except OSError as exc:
        raise DiskProbeError(f"cannot read {path}: {exc.strerror}") from exc
    block = max(ALIGN, (block_bytes + ALIGN - 1) // ALIGN * ALIGN)
    if size < 4 * max(block, SEQ_BLOCK):
        raise DiskProbeError(f"{path} is too small to probe the drive ({size:,} bytes)")
    fd, direct = _open(Path(path))
    try:
        if not direct and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # as little from the cache as may be
        rng = random.Random(seed)
        # random aligned offsets over the whole file: another place each read, as routing does
        n_random = 4096
        offsets = [rng.randrange(0, (size - block) // ALIGN) * ALIGN for _ in range(n_random)]
        random_bw = _timed_reads(fd, offsets, block, depth, seconds)
        random_bw_1 = _timed_reads(fd, offsets[::-1], block, 1, seconds / 2)
        # sequential: each thread its own stretch, far from the random reads' last places
        stretch = size // depth // SEQ_BLOCK * SEQ_BLOCK
        seq_offsets = [t * stretch + i * SEQ_BLOCK for i in range(max(1, stretch // SEQ_BLOCK))
                       for t in range(depth)]
        seq_bw = _timed_reads(fd, seq_offsets, SEQ_BLOCK, depth, seconds)
    finally:
        os.close(fd)
    return DiskSpeed(seq_read_bw=seq_bw, random_read_bw=random_bw, random_read_bw_1=random_bw_1,
                     block_bytes=block, depth=depth, direct=direct, drive=drive_key(Path(path)))


def drive_key(path: Path) -> str:
    """The drive a file lies on, for this machine: its file system's device number."""
    return f"{cpu_key()}|dev{os.stat(path).st_dev}"


def disk_speed(path: Path, block_bytes: int = 4 << 20, refresh: bool = False,
               cache: Path | None = None) -> DiskSpeed:
    """The drive's figures for reads of ``block_bytes``: cached for this drive and block size
    (within a factor of two), else measured on ``path`` now and cached."""
    cache = cache_path(cache)
    data = read_cache(cache)
    disks = data.get("disks") if isinstance(data.get("disks"), list) else []
    key = drive_key(Path(path))
    if not refresh:
        for entry in disks:
            if isinstance(entry, dict) and entry.get("drive") == key \
                    and entry.get("version") == PROBE_VERSION \
                    and 0.5 <= entry.get("block_bytes", 0) / max(block_bytes, 1) <= 2:
                try:
                    return DiskSpeed(**entry)
                except TypeError:
                    break  # written by another version: measure again
    measured = measure_disk(Path(path), block_bytes)
    kept = [e for e in disks if not (isinstance(e, dict) and e.get("drive") == key
                                     and e.get("block_bytes") == measured.block_bytes)]
    data["disks"] = [*kept, asdict(measured)]
    write_cache(cache, data)
    return measured
