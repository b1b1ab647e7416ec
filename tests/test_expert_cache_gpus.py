"""Hot experts in VRAM with several GPUs: each cached layer's pack is on its router's GPU (engine
patch 0004), the advisor weighs the cache for a layer split as it does for one GPU, each GPU
for its own layers, and autotune measures the same splits. tests/test_gpu_multi.py loads such
a plan on two real GPUs."""

from __future__ import annotations

import dataclasses
from collections import Counter

from app.advisor.expert_cache import ram_expert_bytes
from app.advisor.memory import VRAM_HEADROOM, expert_cache_pack_devices, layer_devices, memory_by_device
from app.advisor.planner import DYNAMIC_MMAP_ADVICE, evaluate, plan_for
from app.engine.placement import PlacementPlan, TensorOverride
from app.engine.protocol import DeviceInfo
from app.tune.autotune import candidates
from app.tune.strategies import Budget, advisor, budget_for, fits
from tests.test_advisor import QWEN3_30B_Q4
from tests.test_advisor_gpus import two_gpus
from tests.test_expert_cache_plans import SKEWED, UNIFORM

GiB = 1024**3
MODEL = QWEN3_30B_Q4  # 48 MoE layers of 128 experts, 2.65 MB an expert (Q4_0)
NAMES = ["CUDA0", "CUDA1"]
# a layer split 1 : 1 over 48 layers and the output: layers 0-24 on CUDA0, 25-47 on CUDA1
HALVES = PlacementPlan(n_ctx=4096, split_mode="layer", tensor_split=[1.0, 1.0])


def gpu_weights(plan: PlacementPlan) -> dict[str, int]:
    return {m.device: m.weights for m in memory_by_device(MODEL, plan, NAMES) if m.device in NAMES}


def packs_added(plan: PlacementPlan) -> dict[str, int]:
    """What a static cache of 8 experts a layer adds to each GPU's weights under ``plan``."""
    with_cache, without = gpu_weights(cached(plan)), gpu_weights(plan)
    return {gpu: with_cache[gpu] - without[gpu] for gpu in NAMES}


def cached(plan: PlacementPlan, mode: str = "static", slots: int = 8) -> PlacementPlan:
    return dataclasses.replace(plan, expert_cache=mode, expert_cache_slots=slots)  # type: ignore[arg-type]


def test_each_cached_layers_pack_is_counted_on_its_routers_gpu() -> None:
    plan = dataclasses.replace(HALVES, experts_in_ram="all")
    pack = 8 * MODEL.expert_bytes()
    assert packs_added(plan) == {"CUDA0": 25 * pack, "CUDA1": 23 * pack}
    # an override that sends layers 40-47's routers to RAM too (README's `ffn_.*=CPU`): the
    # engine puts those packs on the first GPU, not on their layers' GPU
    routers_in_ram = dataclasses.replace(plan, overrides=[TensorOverride(r"^blk\.(4[0-7])\.ffn_.*", "CPU")])
    assert packs_added(routers_in_ram) == {"CUDA0": (25 + 8) * pack, "CUDA1": 15 * pack}
    assert Counter(expert_cache_pack_devices(MODEL, routers_in_ram, MODEL.moe_layers, NAMES).values()) == {
        "CUDA0": 33, "CUDA1": 15}


def test_on_two_gpus_the_advisor_spends_each_gpus_vram_on_hot_experts_of_its_own_layers() -> None:
    machine = two_gpus(8, 4)
    whole = plan_for(MODEL, machine, 8192, profile=SKEWED)  # a build without the cache
    plan = plan_for(MODEL, machine, 8192, profile=SKEWED, hot_experts=True)
    assert whole.placement.expert_cache == "off"
    assert plan.placement.expert_cache == "static" and plan.placement.expert_cache_slots > 0
    assert plan.verdict == "fits_with_expert_offload"
    assert plan.placement.tensor_split == whole.placement.tensor_split  # the same layers on each GPU
    owner = layer_devices(plan.placement, MODEL.n_layer, NAMES)
    in_ram = set(ram_expert_bytes(MODEL, plan.placement, NAMES))
    assert plan.experts_in_ram_layers == len(in_ram) > whole.experts_in_ram_layers
    for gpu, budget_gib in zip(NAMES, (8, 4), strict=True):
        mine = [layer for layer in MODEL.moe_layers if owner[layer] == gpu]
        # the first layers of each GPU's range go to RAM, each GPU's packs fill its own VRAM
        assert in_ram & set(mine) == set(mine[:len(in_ram & set(mine))]) and in_ram & set(mine)
        assert plan.device(gpu).total <= budget_gib * GiB - VRAM_HEADROOM
    assert plan.speed is not None and whole.speed is not None
    assert plan.speed.decode.mid > whole.speed.decode.mid
    packs = Counter(owner[layer] for layer in in_ram)
    reason = next(r for r in plan.reasons if r.startswith("hot experts in VRAM ("))
    assert f"(packs: {packs['CUDA0']} on CUDA0, {packs['CUDA1']} on CUDA1)" in reason and "against" in reason


def test_on_two_gpus_with_uniform_routing_the_advisor_says_why_it_keeps_whole_layers() -> None:
    plan = plan_for(MODEL, two_gpus(8, 4), 8192, profile=UNIFORM, hot_experts=True)
    assert plan.placement.expert_cache == "off"
    assert any(r.startswith("hot experts in VRAM weighed, slower here") for r in plan.reasons)


def test_autotune_measures_the_planners_splits_on_two_gpus() -> None:
    budget = Budget("CUDA0", 8 * GiB, {"CUDA1": 4 * GiB})
    base = PlacementPlan(n_ctx=8192)
    start = advisor(MODEL, budget, base, two_gpus(8, 4))
    assert start.expert_cache == "off" and start.overrides  # each GPU's first layers: no shortcut
    tried = dict(candidates(MODEL, start, budget, 16, "expert cache"))
    assert [label.split(":")[0] for label in tried] == [f"hot experts in VRAM ({name})" for name in (
        "whole layers", "half and half", "all cache")]
    assert all(fits(MODEL, plan, budget) for plan in tried.values())
    chosen = plan_for(MODEL, two_gpus(8, 4), 8192, base, profile=SKEWED, hot_experts=True).placement
    assert chosen in tried.values()


def test_a_budget_fits_only_when_each_gpu_holds_its_share() -> None:
    budget = Budget("CUDA0", 8 * GiB, {"CUDA1": 4 * GiB})
    assert budget.gpus == NAMES and budget.usable == 12 * GiB - 2 * VRAM_HEADROOM
    # layers 0-24 on CUDA0, 25-47 on CUDA1: about 7.3 GB of experts for a 3 GiB GPU
    lopsided = dataclasses.replace(HALVES, experts_in_ram=25)
    assert not fits(MODEL, lopsided, budget)
    assert fits(MODEL, lopsided, Budget("CUDA0", 4 * GiB, {"CUDA1": 16 * GiB}))
    gpus = [DeviceInfo("CUDA0", "A", "gpu", 24 * GiB, 20 * GiB),
            DeviceInfo("CUDA1", "B", "gpu", 24 * GiB, 10 * GiB)]
    assert budget_for(gpus) == Budget("CUDA0", 20 * GiB, {"CUDA1": 10 * GiB})
    assert budget_for(gpus, 12 * GiB) == Budget("CUDA0", 12 * GiB)  # a budget stands for one GPU


def test_a_dynamic_cache_with_packs_on_two_gpus_is_told_what_one_gpu_is() -> None:
    # patch 0004 has a copy stream per GPU with packs: pinned memory is what the copies need
    machine = two_gpus(24, 24)
    both = evaluate(MODEL, machine, cached(dataclasses.replace(HALVES, experts_in_ram="all"), "dynamic"))
    assert DYNAMIC_MMAP_ADVICE in both.advice
    pinned = dataclasses.replace(both.placement, use_mmap=False)
    assert DYNAMIC_MMAP_ADVICE not in evaluate(MODEL, machine, pinned).advice
    static = evaluate(MODEL, machine, cached(dataclasses.replace(HALVES, experts_in_ram="all")))
    assert DYNAMIC_MMAP_ADVICE not in static.advice  # a static set is copied once, at load
