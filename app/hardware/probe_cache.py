"""The one file the hardware probes keep their figures in, for this machine.

``app.paths.cache_dir()/bandwidth.json`` holds the RAM probe (``"ram"``), measured GPU memory
bandwidths (``"gpus"``), the drives' probes (``"disks"``) and the host-to-GPU copy probe
(``"host_copy"``). Each entry names the machine it was measured on (``cpu_key``), so that a
cache from elsewhere (a home directory shared over NFS, a copied profile) is measured again.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from app import paths

CACHE_FILE = "bandwidth.json"


def cache_path(cache: Path | None = None) -> Path:
    """``cache``, or the default file in MoE Desk's cache folder."""
    return cache or paths.cache_dir() / CACHE_FILE


def cpu_key() -> str:
    """Which machine cached figures belong to: a probe of another machine must not be reused."""
    return f"{platform.node()}|{platform.processor() or platform.machine()}|{os.cpu_count()}"


def read_cache(path: Path) -> dict:
    """The cache's entries; empty when it is missing or damaged (it is only a cache)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # never a half-written cache
