"""Routing counts, expert hit rate and memory per device, as protocol dataclasses."""

from __future__ import annotations

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
    them (op offload), and the cache serves only small ubatches (decoding).
    """
    layer_counts = [counts[il] for il in moe_layers]
    layer_hits: list[float | None] = []
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
        layer_hits.append(None if uses == 0 else served / uses)
    n_expert = len(counts[0]) if counts else 0
    return RoutingSnapshot(
        n_layer=len(counts), n_expert=n_expert, n_expert_used=n_expert_used,
        layers=list(moe_layers), counts=layer_counts, tokens=max(tokens, 0),
        hit_rate=(uses_on_gpu / uses_total) if uses_total else None,
        layer_hit_rate=layer_hits,
        cached=[cache.resident[il] if cache is not None else [] for il in moe_layers],
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
