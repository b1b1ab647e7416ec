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

Each cache is sized in experts a layer, the most that fit next to everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from app.advisor.expert_cache import cacheable
from app.advisor.search import largest
from app.engine.placement import ExpertCacheMode, PlacementPlan
from app.gguf.info import GGUFModel


@dataclass(frozen=True)
class Split:
    """One way to spend the VRAM for routed experts."""

    name: str  # "whole layers", "half and half", "all cache"
    ram_layers: int  # MoE layers whose routed experts are in RAM
    placement: PlacementPlan  # with its cache sized to fit

    def describe(self, n_moe_layers: int) -> str:
        return (f"routed experts of {self.ram_layers} of {n_moe_layers} layers in RAM, "
                f"{self.placement.expert_cache_slots} of each one's experts in VRAM")


def cache_splits(model: GGUFModel, n_min: int, place: Callable[[int], PlacementPlan],
                 fits: Callable[[PlacementPlan], bool], mode: ExpertCacheMode = "static") -> list[Split]:
    """The splits with a cache that fit. ``n_min``: the fewest MoE layers whose experts must
    be in RAM without a cache; ``place(n)``: the placement with the experts of the first ``n``
    MoE layers in RAM; ``fits``: whether a placement fits the GPU. None for a model the cache
    cannot serve, or when every layer's experts fit in VRAM (nothing to cache)."""
    n_moe = len(model.moe_layers)
    if not cacheable(model) or n_min <= 0 or model.n_expert < 2:
        return []
    on_gpu = n_moe - n_min
    counts = {"whole layers": n_min, "half and half": n_min + on_gpu // 2, "all cache": n_moe}
    splits: list[Split] = []
    for name, n in counts.items():
        if any(split.ram_layers == n for split in splits):
            continue  # few layers on the GPU: two splits are the same
        base = replace(place(n), expert_cache=mode, expert_cache_bytes=0)
        slots = _most_slots(base, model.n_expert - 1, fits)
        if slots:
            splits.append(Split(name, n, replace(base, expert_cache_slots=slots)))
    return splits


def _most_slots(base: PlacementPlan, most: int, fits: Callable[[PlacementPlan], bool]) -> int:
    """The most experts a layer (at most ``most``) whose cache fits; 0 when not even one."""
    if most < 1:
        return 0
    return largest(1, most, lambda slots: fits(replace(base, expert_cache_slots=slots))) or 0
