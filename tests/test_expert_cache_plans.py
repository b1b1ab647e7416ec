"""Hot experts in VRAM in the plans: the advisor weighs whole layers' experts against a cache of
the RAM layers' most chosen experts, and autotune measures both (app/advisor/cache_split.py).
With several GPUs: tests/test_expert_cache_gpus.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.advisor.cache_split import cache_splits
from app.advisor.memory import VRAM_HEADROOM, memory_by_device
from app.advisor.planner import DYNAMIC_MMAP_ADVICE, Plan, evaluate, experts_in_ram_placement, plan_for
from app.engine.client import EngineClient
from app.engine.expert_cache import HOST_PACKS_ENV
from app.engine.placement import PlacementPlan
from app.engine.protocol import BuildInfo, DeviceInfo
from app.hardware.bandwidth import RamBandwidth
from app.hardware.h2d import HostCopyRates
from app.synthetic import SyntheticSpec
from app.tune.autotune import candidates
from app.tune.measure import Measurer, Workload
from app.tune.report import read_csv
from app.tune.strategies import Budget, first_n_in_ram, with_experts_in_ram
from tests.test_advisor import QWEN3_30B_Q4, machine, model_from_spec
from tests.test_expert_cache_model import uniform_counts

GiB = 1024**3
N_LAYER = QWEN3_30B_Q4.n_layer
# per layer, 16 of the 128 experts take 70% of the selections (the counts of 1,000 tokens)
SKEWED = [[2800] * 16 + [150] * 112 for _ in range(N_LAYER)]
# routing no more uneven than chance
UNIFORM = [uniform_counts(1000, seed=layer) for layer in range(N_LAYER)]


def cache_build(patch: bool = True) -> BuildInfo:
    return BuildInfo(llama_cpp_python="0.3", backends=["CPU", "CUDA"], routing_patch=True, system_info="",
                     devices=[DeviceInfo("CUDA0", "RTX", "gpu", 12 * GiB, 12 * GiB)],
                     expert_cache_patch=patch)


def test_with_skewed_routing_the_advisor_spends_vram_on_hot_experts() -> None:
    plan = plan_for(QWEN3_30B_Q4, machine(12), 8192, profile=SKEWED, build=cache_build())
    whole = plan_for(QWEN3_30B_Q4, machine(12), 8192, profile=SKEWED)  # a build without the cache
    assert whole.placement.expert_cache == "off" and whole.experts_in_ram_layers == 19
    assert plan.placement.expert_cache == "static" and plan.placement.expert_cache_slots > 0
    assert plan.experts_in_ram_layers > 19  # some layers' VRAM became the cache
    assert plan.verdict == "fits_with_expert_offload"
    assert plan.device("CUDA0").total <= 12 * GiB - VRAM_HEADROOM
    assert plan.speed is not None and whole.speed is not None and plan.speed.expert_hit_rate is not None
    assert plan.speed.decode.mid > whole.speed.decode.mid
    assert any(r.startswith("hot experts in VRAM (") and "against" in r for r in plan.reasons)


def test_with_mmap_off_the_advisor_weighs_a_cache_refreshed_as_tokens_decode() -> None:
    # from pinned memory the copies run beside decoding (measured faster than a static set);
    # from the mapped file each token would wait for them: static caches only
    pinned = plan_for(QWEN3_30B_Q4, machine(12), 8192, PlacementPlan(use_mmap=False), profile=SKEWED,
                      build=cache_build())
    mapped = plan_for(QWEN3_30B_Q4, machine(12), 8192, profile=SKEWED, build=cache_build())
    assert pinned.placement.expert_cache == "dynamic" and not pinned.placement.use_mmap
    assert mapped.placement.expert_cache == "static"
    assert any("refreshed as tokens decode" in r for r in pinned.reasons)
    assert pinned.speed is not None and mapped.speed is not None
    assert pinned.speed.expert_hit_rate is not None and mapped.speed.expert_hit_rate is not None
    assert pinned.speed.expert_hit_rate.low > mapped.speed.expert_hit_rate.low  # the copies' hits
    # the same split, static, is what the planner weighed it against
    static = evaluate(QWEN3_30B_Q4, machine(12), dataclasses.replace(pinned.placement, expert_cache="static"),
                      profile=SKEWED)
    assert static.speed is not None and pinned.speed.decode.mid > static.speed.decode.mid


def test_with_uniform_routing_the_advisor_keeps_whole_layers_and_says_why() -> None:
    plan = plan_for(QWEN3_30B_Q4, machine(12), 8192, profile=UNIFORM, hot_experts=True)
    assert plan.placement.expert_cache == "off" and plan.experts_in_ram_layers == 19
    assert any(r.startswith("hot experts in VRAM weighed, slower here") for r in plan.reasons)


def test_the_cache_is_weighed_only_where_it_can_run() -> None:
    def cached(plan_) -> bool:
        return plan_.placement.expert_cache != "off"

    assert not cached(plan_for(QWEN3_30B_Q4, machine(12), 8192, profile=SKEWED,
                               build=cache_build(patch=False)))
    assert not cached(plan_for(QWEN3_30B_Q4, machine(None), 8192, profile=SKEWED, hot_experts=True))
    assert not cached(plan_for(QWEN3_30B_Q4, machine(80), 8192, profile=SKEWED, hot_experts=True))
    no_host = PlacementPlan(no_host=True)  # CPU layouts: the cache cannot copy from them
    assert not cached(plan_for(QWEN3_30B_Q4, machine(12), 8192, no_host, profile=SKEWED, hot_experts=True))
    gpt_oss = model_from_spec(SyntheticSpec.preset("gpt-oss-20b"))  # expert biases
    assert not cached(plan_for(gpt_oss, machine(8), 8192, hot_experts=True))
    # the user's own cache setting is theirs
    mine = PlacementPlan(expert_cache="dynamic", expert_cache_slots=8)
    plan = plan_for(QWEN3_30B_Q4, machine(12), 8192, mine, profile=SKEWED, hot_experts=True)
    assert plan.placement.expert_cache == "dynamic" and plan.placement.expert_cache_slots == 8


def test_each_split_holds_the_most_experts_that_fit_the_gpu() -> None:
    model, budget = QWEN3_30B_Q4, Budget("CUDA0", 12 * GiB)
    base = PlacementPlan(n_ctx=8192)

    def fits(plan: PlacementPlan) -> bool:
        return next(m.total for m in memory_by_device(model, plan, ["CUDA0"])
                    if m.device == "CUDA0") <= budget.usable

    def place(layers: set[int]) -> PlacementPlan:
        return experts_in_ram_placement(base, layers, model)

    n_min = first_n_in_ram(model, budget, base)
    moe = model.moe_layers
    splits = cache_splits(model, [moe], [n_min], place, fits)
    assert [(s.name, s.ram_layers) for s in splits] == [
        ("whole layers", n_min), ("half and half", n_min + (N_LAYER - n_min) // 2), ("all cache", N_LAYER)]
    assert all(s.layers == set(moe[:s.ram_layers]) for s in splits)  # the first layers go to RAM
    for split in splits:
        assert fits(split.placement)
        slots = split.placement.expert_cache_slots
        assert not fits(dataclasses.replace(split.placement, expert_cache_slots=slots + 1))
    slots = [s.placement.expert_cache_slots for s in splits]
    assert slots[0] < slots[1] < slots[2]  # the more layers in RAM, the more VRAM for the cache
    assert cache_splits(model, [moe], [0], place, fits) == []


def test_autotune_measures_the_cache_where_experts_are_in_ram() -> None:
    model, budget = QWEN3_30B_Q4, Budget("CUDA0", 12 * GiB)
    base = PlacementPlan(n_ctx=8192)
    start = with_experts_in_ram(base, first_n_in_ram(model, budget, base), N_LAYER)
    tried = dict(candidates(model, start, budget, 16, "expert cache"))
    assert len(tried) == 3 and all(p.expert_cache == "static" for p in tried.values())
    assert any(label.startswith("hot experts in VRAM") for label in tried)
    # not without a GPU, not once a cache is in the plan, not when every expert is in VRAM
    assert not list(candidates(model, start, None, 16, "expert cache"))
    cached = next(iter(tried.values()))
    assert not list(candidates(model, cached, budget, 16, "expert cache"))
    assert not list(candidates(model, with_experts_in_ram(start, 0, N_LAYER), Budget("CUDA0", 80 * GiB), 16,
                               "expert cache"))
    # and once a cache is in the plan, llama.cpp's no_host (which the cache cannot use) is not tried
    assert not any(p.no_host for _, p in candidates(model, cached, budget, 16, "prefill"))


def test_autotune_then_measures_a_refreshed_cache_with_each_copy_policy_from_pinned_memory() -> None:
    model, budget = QWEN3_30B_Q4, Budget("CUDA0", 12 * GiB)
    static = PlacementPlan(n_ctx=8192, experts_in_ram="all", expert_cache="static", expert_cache_slots=32)
    tried = list(candidates(model, static, budget, 16, "cache copies"))
    # thrifty, eager, and eager at one copy a cached layer and token (48 layers' experts in RAM)
    assert [(p.expert_cache_policy, p.expert_cache_uploads) for _, p in tried] == [
        ("thrifty", 0), ("eager", 0), ("eager", 48)]
    assert tried[2][0] == "dynamic hot experts, eager copies, 48 a token at most, mmap off"
    # the copies run beside decoding only from pinned memory; the cache itself stays as it was
    assert all(p.expert_cache == "dynamic" and not p.use_mmap and p.expert_cache_slots == 32
               for _, p in tried)
    after_eager = candidates(model, tried[1][1], budget, 16, "cache copies")
    assert [(p.expert_cache_policy, p.expert_cache_uploads) for _, p in after_eager] == [
        ("thrifty", 0), ("eager", 48)]
    # eager capped by the advisor (the link): each setting measured against it
    capped = dataclasses.replace(tried[1][1], expert_cache_uploads=38)
    after_capped = list(candidates(model, capped, budget, 16, "cache copies"))
    assert [(p.expert_cache_policy, p.expert_cache_uploads) for _, p in after_capped] == [
        ("thrifty", 0), ("eager", 0), ("eager", 48)]
    assert not list(candidates(model, PlacementPlan(n_ctx=8192, experts_in_ram="all"), budget, 16,
                               "cache copies"))


def test_a_measurement_counts_the_hot_experts_hits_beside_their_prediction(realistic_moe_gguf: Path,
                                                                           tmp_path: Path) -> None:
    # no GPU here: the engine's test switch keeps the packs in RAM, which runs the same split
    env = {HOST_PACKS_ENV: "1", "MOEDESK_HOME": str(tmp_path)}
    plan = PlacementPlan(n_ctx=4096, n_batch=2048, n_ubatch=2048, experts_in_ram="all", repack=False,
                         n_threads=2)
    workload = Workload(prefill_tokens=(64,), decode_tokens=48)
    with EngineClient.spawn(env=env) as engine:
        measurer = Measurer(engine, realistic_moe_gguf)
        plain = measurer.measure("ram", plan, workload)
        cached = measurer.measure("cache", dataclasses.replace(plan, expert_cache="static",
                                                               expert_cache_slots=32), workload)
    assert plain.ok and plain.vram_hit_rate is None and plain.predicted_hit_rate is None
    assert cached.ok and cached.vram_hit_rate is not None and cached.predicted_hit_rate is not None
    assert cached.predicted_hit_rate.source == "profile"  # the engine's warm-up ranked the experts
    # realistic routing: the issue asks for the prediction within 10 points
    assert abs(cached.vram_hit_rate - cached.predicted_hit_rate.mid) <= 0.10
    assert f"hot experts in VRAM {cached.vram_hit_rate:.0%} hits (predicted" in cached.summary()


def test_bench_measures_hot_experts_and_shows_their_hits_beside_the_prediction(
        realistic_moe_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    # no GPU here: the engine's test switch keeps the packs in RAM, which runs the same split
    monkeypatch.setenv(HOST_PACKS_ENV, "1")
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    out = tmp_path / "report"
    assert main(["bench", str(realistic_moe_gguf), "--strategies", "n-cpu-moe", "--tune-seconds", "0",
                 "--repeats", "1", "--threads", "2", "--expert-cache", "static",
                 "--expert-cache-size", "32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = {row["strategy"]: row for row in read_csv(out / "report.csv")}
    assert set(table) == {"n-cpu-moe", "cache static"}
    assert table["n-cpu-moe"]["vram_hit_rate"] == "-"
    cache = table["cache static"]
    assert "hot experts 32/layer static" in cache["placement"] and cache["note"] == ""
    measured = float(cache["vram_hit_rate"].rstrip("%")) / 100
    low, high = (float(x) / 100 for x in cache["predicted_hit_rate"].rstrip("%").split("-"))
    # realistic routing ranked by the engine's warm-up: the issue asks for 10 points
    assert abs(measured - (low + high) / 2) <= 0.10
    header = next(line for line in printed.splitlines() if line.startswith("strategy"))
    assert "VRAM hits" in header and "predicted" in header
    assert any(line.startswith("cache static: decode") and "n-cpu-moe's" in line
               and f"served {cache['vram_hit_rate']}" in line for line in printed.splitlines())


def test_a_dynamic_cache_on_the_mapped_file_is_advised_to_turn_mmap_off() -> None:
    dynamic = PlacementPlan(n_ctx=8192, experts_in_ram="all", expert_cache="dynamic", expert_cache_slots=16)
    mapped = evaluate(QWEN3_30B_Q4, machine(12), dynamic)
    assert DYNAMIC_MMAP_ADVICE in mapped.advice
    pinned = evaluate(QWEN3_30B_Q4, machine(12), dataclasses.replace(dynamic, use_mmap=False))
    assert DYNAMIC_MMAP_ADVICE not in pinned.advice
    static = evaluate(QWEN3_30B_Q4, machine(12), dataclasses.replace(dynamic, expert_cache="static"))
    assert DYNAMIC_MMAP_ADVICE not in static.advice  # a static set is copied once, at load


def test_a_dynamic_cache_copies_eagerly_only_where_the_cpu_is_not_bound_by_ram() -> None:
    base = PlacementPlan(expert_cache="dynamic", expert_cache_slots=16, use_mmap=False)
    ram_bound = RamBandwidth(read_bw=60e9, read_bw_1=20e9, copy_bw_1=10e9, matmul_flops=5e11, threads=8,
                             buffer_bytes=1 << 29)
    desktop = plan_for(QWEN3_30B_Q4, machine(12), 8192, base, ram=ram_bound, profile=SKEWED)
    assert desktop.placement.expert_cache_policy == "thrifty"
    assert not any("expert copies" in r for r in desktop.reasons)
    # cores that read slowly beside plenty of RAM bandwidth, and the link to the GPU the
    # accelerator machine's host copies over from pinned memory
    link = HostCopyRates(gpu="RTX", pageable=9e9, pinned=52e9, mapped=9e9, copy_bytes=256 << 20)
    cores_bound = dataclasses.replace(ram_bound, read_bw=250e9, read_bw_1=7.7e9, host_copy=link)
    server = plan_for(QWEN3_30B_Q4, machine(12), 8192, base, ram=cores_bound, profile=SKEWED)
    assert server.placement.expert_cache_policy == "eager"
    assert any(r.startswith("eager expert copies: decode") for r in server.reasons)
    # a link too slow to carry eager's copies under the CPU's part of a token: fewer of them a
    # token (the engine's cap), or where even those would not pass, thrifty; and why
    def over(pinned: float) -> Plan:
        slow_link = dataclasses.replace(cores_bound, host_copy=dataclasses.replace(link, pinned=pinned))
        eager = dataclasses.replace(base, expert_cache_policy="eager")
        return plan_for(QWEN3_30B_Q4, machine(12), 8192, eager, ram=slow_link, profile=SKEWED)

    assert server.placement.expert_cache_uploads == 0  # the 52 GB/s link carries them all
    capped, thrifty = over(25e9), over(10e9)
    assert capped.placement.expert_cache_policy == "eager"
    assert 0 < capped.placement.expert_cache_uploads < 1.6 * QWEN3_30B_Q4.n_layer
    assert any(r.startswith(f"eager expert copies, {capped.placement.expert_cache_uploads} a token at most")
               and "uncapped, eager's copies would take" in r for r in capped.reasons)
    assert thrifty.placement.expert_cache_policy == "thrifty"
    assert any(r.startswith("thrifty expert copies: decode") and "longer on the link to the GPU" in r
               for r in thrifty.reasons)
    # from the mapped file eager would copy thriftily: nothing to choose
    mapped = plan_for(QWEN3_30B_Q4, machine(12), 8192, dataclasses.replace(base, use_mmap=True),
                      ram=cores_bound, profile=SKEWED)
    assert mapped.placement.expert_cache_policy == "thrifty"


def test_a_prompt_copies_only_the_experts_the_packs_do_not_hold() -> None:
    # a prompt's ubatch computes the layers with experts in RAM on the GPU, copying the experts
    # its tokens chose; the scheduler takes those the packs hold from VRAM (engine patch 0004)
    plain = PlacementPlan(n_ctx=8192, experts_in_ram="all", use_mmap=False)
    without = evaluate(QWEN3_30B_Q4, machine(12), plain)
    cached = evaluate(QWEN3_30B_Q4, machine(12),
                      dataclasses.replace(plain, expert_cache="static", expert_cache_slots=32))
    assert without.speed is not None and cached.speed is not None
    assert without.speed.prefill_copy_bytes > 10e9  # every layer's experts, each ubatch
    # a quarter of each layer's experts held: three quarters copied, as n-cpu-moe's 36 layers
    copied = without.speed.prefill_copy_bytes
    assert cached.speed.prefill_copy_bytes == pytest.approx(copied * 96 / 128, rel=1e-6)
    assert cached.speed.prefill.mid > without.speed.prefill.mid
