"""Routing counts, expert hit rate, memory per device and storage reads, for the protocol."""

from __future__ import annotations

import os
from collections import deque

import psutil

from app.engine import ggml_backend
from app.engine.protocol import DeviceMemory, RoutingSnapshot


def routing_snapshot(counts: list[list[int]], tokens: int, n_expert_used: int,
                     moe_layers: list[int], expert_layers_on_gpu: set[int],
                     cache: ggml_backend.CacheStats | None = None) -> RoutingSnapshot:
    """Counts of the MoE layers and the share of expert uses served from device memory.

    llama.cpp places a layer's routed experts as one tensor, so each layer's experts are all
    on a GPU or all in RAM; with the hot-expert cache (engine patch 0004) a RAM layer's
    selections of the experts it holds in VRAM are served from VRAM too. A layer's hit rate
    is the share of its selections served from VRAM, the overall one the same over all layers.
    Prefill ubatches of RAM layers count as RAM: llama.cpp copies those experts over to compute
    them (op offload), and the cache serves only small ubatches (decoding). These rates run
    since load, a long prompt in them; the served counts let a reader take the recent ones.
    """
    layer_counts = [counts[il] for il in moe_layers]
    layer_hits: list[float | None] = []
    layer_served: list[int] = []
    uses_total = 0
    uses_on_gpu = 0
    for il, row in zip(moe_layers, layer_counts, strict=True):
        uses = sum(row)
        uses_total += uses
        if il in expert_layers_on_gpu:
            served = uses
        else:
            # the cache's counters run since it was set up; routing counts may have been reset
            served = min(uses, cache.hits[il]) if cache is not None else 0
        uses_on_gpu += served
        layer_served.append(served)
        layer_hits.append(None if uses == 0 else served / uses)
    n_expert = len(counts[0]) if counts else 0
    return RoutingSnapshot(
        n_layer=len(counts), n_expert=n_expert, n_expert_used=n_expert_used,
        layers=list(moe_layers), counts=layer_counts, tokens=max(tokens, 0),
        hit_rate=(uses_on_gpu / uses_total) if uses_total else None,
        layer_hit_rate=layer_hits,
        cached=[cache.resident[il] if cache is not None else [] for il in moe_layers],
        served=layer_served,
    )


def device_memory() -> list[DeviceMemory]:
    """Used and total bytes of host RAM and of every non-CPU ggml device."""
    ram = psutil.virtual_memory()
    memory = [DeviceMemory(device="RAM", used=ram.total - ram.available, total=ram.total)]
    for device in ggml_backend.devices():
        if device.kind == "cpu":
            continue
        free, total = ggml_backend.device_memory(device)
        memory.append(DeviceMemory(device=device.name, used=total - free, total=total))
    return memory


def process_rss() -> int:
    return psutil.Process().memory_info().rss


_PROC_IO: int | None = None  # an open /proc/self/io (Linux): read each decode step, cheaply


def storage_read_bytes() -> int | None:
    """Bytes this process has read from storage so far (the OS's count: page faults on mapped
    files and reads alike; page cache hits are not counted), or None where the OS keeps none.
    On Linux a pread of /proc/self/io, a few microseconds (psutil's takes ~25 us)."""
    global _PROC_IO
    try:
        if _PROC_IO is None and os.path.exists("/proc/self/io"):
            _PROC_IO = os.open("/proc/self/io", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        if _PROC_IO is not None:
            text = os.pread(_PROC_IO, 512, 0)
            at = text.index(b"\nread_bytes: ") + 13
            return int(text[at:text.index(b"\n", at)])
        return int(psutil.Process().io_counters().read_bytes)
    except (AttributeError, NotImplementedError, ValueError, psutil.Error, OSError):
        return None


class StorageMeter:
    """Storage reads of decode steps: the last WINDOW of them (live figures) and since load."""

    WINDOW = 32

    def __init__(self) -> None:
        self.available = storage_read_bytes() is not None
        self._recent: deque[tuple[int, int, float]] = deque(maxlen=self.WINDOW)
        self.total_bytes = 0
        self.total_tokens = 0

    def start(self) -> int | None:
        return storage_read_bytes() if self.available else None

    def step(self, start: int | None, tokens: int, seconds: float) -> None:
        """Count one decode step begun at ``start`` (start()'s value) that decoded ``tokens``."""
        if start is None or tokens <= 0:
            return
        end = storage_read_bytes()
        if end is None:
            return
        read = max(0, end - start)
        self._recent.append((read, tokens, seconds))
        self.total_bytes += read
        self.total_tokens += tokens

    def recent(self) -> tuple[float, float]:
        """Bytes per token and bytes/s over the recent decode steps (0 before any)."""
        read = sum(r for r, _, _ in self._recent)
        tokens = sum(t for _, t, _ in self._recent)
        seconds = sum(s for _, _, s in self._recent)
        return (read / tokens if tokens else 0.0), (read / seconds if seconds > 0 else 0.0)
