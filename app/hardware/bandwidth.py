"""How fast this machine moves bytes: a short measured RAM probe, cached, and GPU overrides.

Decode speed with routed experts in RAM is set by how fast the CPU cores can stream those
experts from memory, and prefill with experts in RAM by how fast the host can copy them to
the GPU; so the advisor measures rather than guesses:

* ``read_bw``: bytes/s that all physical cores together read (each thread sums its own slice
  of a buffer far larger than any cache; numpy releases the GIL inside the reduction);
* ``read_bw_1``: the same for one thread (decode with few threads is bound by this);
* ``copy_bw_1``: bytes/s one thread copies (a CUDA copy from pageable memory, such as an
  mmapped model, goes through one staging memcpy: the speed model's estimate of it where
  ``host_copy`` is not measured);
* ``matmul_flops``: float32 FLOP/s of a numpy (BLAS) matrix product over all cores, the CPU's
  compute ceiling for prefill;
* ``host_copy``: what the host really copies to the GPU at, pinned and pageable, through the
  CUDA runtime (app/hardware/h2d.py; None without an NVIDIA GPU and a CUDA runtime);
* ``expert_read``: what llama.cpp's own CPU kernels read routed experts at, measured by
  decoding (app/hardware/expert_read.py; None until ``moedesk-cli probe-cpu`` or a tuning run
  measured it: it takes the engine and half a minute, so it is never run from here).

The figures are cached in ``app.paths.cache_dir()/bandwidth.json`` for this CPU, so the probe
runs once (about a second, and about a second more with an NVIDIA GPU). The same file may
carry measured GPU memory bandwidths under ``"gpus"`` (bytes/s by GPU name), which then win
over NVML's clock x bus width and the table.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from app.hardware.expert_read import ExpertReadRate, cached_expert_read
from app.hardware.h2d import HostCopyRates, host_copy_probe
from app.hardware.probe_cache import CACHE_FILE, cache_path, cpu_key, read_cache, write_cache

__all__ = ["CACHE_FILE", "RamBandwidth", "cpu_key", "measure_ram", "measured_gpu_bandwidth",
           "ram_bandwidth", "record_gpu_bandwidth"]
# 512 MiB: far beyond the last-level cache of any desktop or server CPU (up to ~400 MiB)
DEFAULT_BUFFER = 512 * 1024**2
PROBE_VERSION = 1


@dataclass
class RamBandwidth:
    """Measured memory figures of this machine's CPU (bytes/s, FLOP/s)."""

    read_bw: float  # all threads together
    read_bw_1: float  # one thread
    copy_bw_1: float  # one thread copying
    matmul_flops: float  # float32 matrix product over all cores
    threads: int  # threads used for read_bw
    buffer_bytes: int
    cpu: str = ""  # which CPU it was measured on (the cache key)
    version: int = PROBE_VERSION
    # host-to-GPU copies through the CUDA runtime (cached apart, under "host_copy")
    host_copy: HostCopyRates | None = None
    # the CPU kernels' read rate for routed experts (cached apart, under "expert_read")
    expert_read: ExpertReadRate | None = None


def measure_ram(threads: int | None = None, buffer_bytes: int = DEFAULT_BUFFER,
                repeats: int = 3) -> RamBandwidth:
    """Run the probe now (best of ``repeats``); ``threads`` defaults to the physical cores."""
    threads = max(1, threads or _physical_cores())
    n = buffer_bytes // 8
    src = np.ones(n, dtype=np.float64)  # ones, not empty: every page must really exist
    dst = np.empty_like(src)
    slices = [src[i * n // threads:(i + 1) * n // threads] for i in range(threads)]

    def best(run) -> float:  # noqa: ANN001 - a no-argument callable
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    read_1 = src.nbytes / best(src.sum)
    copy_1 = src.nbytes / best(lambda: np.copyto(dst, src))
    with ThreadPoolExecutor(threads) as pool:
        read_all = src.nbytes / best(lambda: list(pool.map(np.sum, slices)))
    a = np.ones((1024, 1024), dtype=np.float32)
    flops = 2 * 1024**3 / best(lambda: a @ a)
    return RamBandwidth(read_bw=max(read_all, read_1), read_bw_1=read_1, copy_bw_1=copy_1,
                        matmul_flops=flops, threads=threads, buffer_bytes=src.nbytes,
                        cpu=cpu_key())


def ram_bandwidth(refresh: bool = False, cache: Path | None = None,
                  buffer_bytes: int = DEFAULT_BUFFER) -> RamBandwidth:
    """This machine's figures, with its host-to-GPU copy rates: from the cache when it holds
    this CPU's, else measured now (and cached). ``refresh`` measures again."""
    cache = cache_path(cache)
    host_copy = host_copy_probe(refresh, cache).rates
    expert_read = cached_expert_read(cache)
    data = read_cache(cache)
    ram = data.get("ram")
    if not refresh and isinstance(ram, dict) and ram.get("cpu") == cpu_key() \
            and ram.get("version") == PROBE_VERSION:
        try:
            return RamBandwidth(**ram, host_copy=host_copy, expert_read=expert_read)
        except TypeError:
            pass  # written by another version: measure again
    measured = measure_ram(buffer_bytes=buffer_bytes)
    data["ram"] = {k: v for k, v in asdict(measured).items() if k not in ("host_copy", "expert_read")}
    write_cache(cache, data)
    return replace(measured, host_copy=host_copy, expert_read=expert_read)


def measured_gpu_bandwidth(name: str, cache: Path | None = None) -> float | None:
    """A measured memory bandwidth (bytes/s) recorded for the GPU called ``name``, if any."""
    gpus = read_cache(cache_path(cache)).get("gpus")
    value = gpus.get(name) if isinstance(gpus, dict) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def record_gpu_bandwidth(name: str, bytes_per_s: float, cache: Path | None = None) -> None:
    """Remember a measured memory bandwidth for the GPU called ``name`` (wins over estimates)."""
    if bytes_per_s <= 0:
        raise ValueError("a bandwidth must be positive")
    cache = cache_path(cache)
    data = read_cache(cache)
    gpus = data.get("gpus") if isinstance(data.get("gpus"), dict) else {}
    gpus[name] = float(bytes_per_s)
    data["gpus"] = gpus
    write_cache(cache, data)


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
