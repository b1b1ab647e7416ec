"""Byte counts in words, one way across the app: GiB for memory (RAM, VRAM, weights loaded,
caches), as llama.cpp logs it; GB for files and disks (downloads, the library, free space),
as the Hub and file managers show them. Rates (GB/s) and bytes read per token stay decimal."""

from __future__ import annotations

GiB = 2**30
GB = 10**9


def gib(n: float, digits: int = 1) -> str:
    """Memory: ``12.3 GiB``."""
    return f"{n / GiB:.{digits}f} GiB"


def memory_size(n: float) -> str:
    """Memory in the unit that keeps it readable with 3 significant figures (GiB, MiB, KiB)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if n / size < 100 else f"{n / size:.0f} {unit}"
    return f"{n:.0f} B"


def file_size(n: float) -> str:
    """A file or a disk, as the Hub writes it: ``812 KB``, ``3.4 MB``, ``24.1 GB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"
