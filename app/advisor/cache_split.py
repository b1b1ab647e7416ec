"""Splitting the VRAM left for routed experts between whole layers' experts and hot experts.

With a GPU too small for every routed expert, llama.cpp's best plan (``--n-cpu-moe N``) keeps
the experts of the last layers whole in VRAM and those of the first N layers in RAM. Hot
experts in VRAM (engine patch 0004) spend the same bytes differently: a pack of each RAM
layer's most chosen experts, serving a share of every RAM layer's selections, for a fixed cost
per cached layer (app/advisor/expert_cache.py). Which wins depends on the routing's skew and on
that cost, so the planner and autotune try a few splits and keep the fastest, predicted or
measured:

* whole layers: the fewest layers in RAM that fit, plus a cache of the VRAM a layer's experts
  leave over;
* half and half: half of the whole layers' experts to RAM, their VRAM a cache over all RAM layers;
* all cache: every layer's experts in RAM, all that VRAM a cache.

With several GPUs (llama.cpp's layer split) each GPU's layers are split so, the first of its
range going to RAM first, as the planner fills each GPU: a layer's pack is on its router's GPU
(app/advisor/memory.py), so each GPU spends its own VRAM on its own layers' experts or packs.
Each cache is sized in experts a layer (one count for every cached layer, as the engine takes
it), the most that fit next to everything else on every GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from app.advisor.expert_cache import cacheable
from app.advisor.search import largest
from app.engine.placement import ExpertCacheMode, PlacementPlan
from app.gguf.info import GGUFModel

# each split: the share of a GPU's layers with whole experts in VRAM that goes to RAM
SHARES_TO_RAM = {"whole layers": 0.0, "half and half": 0.5, "all cache": 1.0}


@dataclass(frozen=True)
class Split:
    """One way to spend the VRAM for routed experts."""

    name: str  # "whole layers", "half and half", "all cache"
    layers: frozenset[int]  # MoE layers whose routed experts are in RAM (each with a pack)
    placement: PlacementPlan  # with its cache sized to fit

    @property
    def ram_layers(self) -> int:
        return len(self.layers)

    def describe(self, n_moe_layers: int) -> str:
        return (f"routed experts of {self.ram_layers} of {n_moe_layers} layers in RAM, "
                f"{self.placement.expert_cache_slots} of each one's experts in VRAM")


def cache_splits(model: GGUFModel, ranges: list[list[int]], n_min: list[int],
                 place: Callable[[set[int]], PlacementPlan], fits: Callable[[PlacementPlan], bool],
                 mode: ExpertCacheMode = "static") -> list[Split]:
    """The splits with a cache that fit. ``ranges``: each GPU's MoE layers in order (one list
    for one GPU); ``n_min``: for each, the fewest of its first layers whose experts must be in
    RAM without a cache; ``place(layers)``: the placement with the experts of ``layers`` in
    RAM; ``fits``: whether a placement fits every GPU. None for a model the cache cannot
    serve, or when every layer's experts fit in VRAM (nothing to cache)."""
    if not cacheable(model) or sum(n_min) <= 0 or model.n_expert < 2:
        return []
    splits: list[Split] = []
    for name, share in SHARES_TO_RAM.items():
        layers = frozenset(layer for mine, n in zip(ranges, n_min, strict=True)
                           for layer in mine[:n + int(share * (len(mine) - n))])
        if any(split.layers == layers for split in splits):
            continue  # few layers on the GPUs: two splits are the same
        base = replace(place(set(layers)), expert_cache=mode, expert_cache_bytes=0)
        slots = _most_slots(base, model.n_expert - 1, fits)
        if slots:
            splits.append(Split(name, layers, replace(base, expert_cache_slots=slots)))
    return splits


def _most_slots(base: PlacementPlan, most: int, fits: Callable[[PlacementPlan], bool]) -> int:
    """The most experts a layer (at most ``most``) whose cache fits; 0 when not even one."""
    if most < 1:
        return 0
    return largest(1, most, lambda slots: fits(replace(base, expert_cache_slots=slots))) or 0
