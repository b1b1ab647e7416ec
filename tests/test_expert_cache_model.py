"""The hot-expert cache in the advisor: the hit rate it should serve and what it does to the
predicted decode speed (app/advisor/expert_cache.py, app/advisor/speed.py). The engine side is
tests/test_expert_cache.py."""

from __future__ import annotations

import dataclasses
import random

import pytest

from app.advisor import speed
from app.advisor.expert_cache import (
    PROFILE_CARRY_LOW,
    HitRate,
    cacheable,
    design_effect,
    held_out_share,
    hot_experts,
    predicted_hit_rate,
    top_share,
)
from app.advisor.speed import SpeedRange, predict
from app.engine.placement import PlacementPlan
from app.hardware.bandwidth import RamBandwidth
from app.hardware.expert_read import ExpertReadRate
from app.hardware.h2d import HostCopyRates
from app.synthetic import SyntheticSpec
from tests.test_advisor import QWEN3_30B_Q4, model_from_spec
from tests.test_advisor_gpus import H100
from tests.test_speed_model import SERVER_RAM

ON_GPU = {"CUDA0": H100}


def uniform_counts(tokens: int, n_expert: int = 128, k: int = 8, seed: int = 1) -> list[int]:
    """A layer's counts after ``tokens`` tokens of uniform top-k routing."""
    rng = random.Random(seed)
    counts = [0] * n_expert
    for _ in range(tokens):
        for expert in rng.sample(range(n_expert), k):
            counts[expert] += 1
    return counts


def test_a_profiles_top_experts_are_shrunk_towards_uniform_by_hand() -> None:
    # 4 experts, top-1, 100 tokens: the top one took 60. By chance alone a count varies by
    # 100 x 0.25 x 0.75 = 18.75; the counts spread by ((35^2 + 5^2 + 15^2 + 15^2) / 4) = 425.
    counts = [60, 20, 10, 10]
    # optimistic: the skew keeps 1 - 18.75 / 425 of its distance from uniform (0.6 - 0.25)
    assert held_out_share(counts, 1, 1) == pytest.approx(0.25 + (1 - 18.75 / 425) * 0.35)
    # pessimistic: consecutive tokens correlated, rho = (0.4 - 0.25) / 0.75 = 0.2: D = 1.5;
    # and a new text keeps PROFILE_CARRY_LOW of the skew
    assert design_effect(1, 4) == pytest.approx(1.5)
    low = 0.25 + PROFILE_CARRY_LOW * (1 - 1.5 * 18.75 / 425) * 0.35
    assert held_out_share(counts, 1, 1, 1.5, PROFILE_CARRY_LOW) == pytest.approx(low)
    rate = predicted_hit_rate(1, 4, 1, [counts], [0])
    assert (rate.low, rate.high) == (pytest.approx(low), pytest.approx(0.5845588, abs=1e-6))
    assert rate.source == "profile" and rate.mid == pytest.approx((rate.low + rate.high) / 2)


def test_counts_no_more_uneven_than_chance_predict_uniform_hits() -> None:
    # in the profile the top expert took 27%, but 27/23/26/24 is what chance gives
    assert predicted_hit_rate(1, 4, 1, [[27, 23, 26, 24]], [0]) == HitRate(0.25, 0.25, "profile")


def test_a_small_sample_of_uniform_routing_does_not_promise_its_own_top_share() -> None:
    counts = uniform_counts(128)  # 1,024 selections, the warm-up's order of size
    in_sample = sum(sorted(counts, reverse=True)[:32]) / sum(counts)
    assert in_sample > 0.33  # the top quarter by counts, where new tokens give it 25%
    rate = predicted_hit_rate(32, 128, 8, [counts], [0])
    assert rate.high < 0.27


def test_more_of_the_same_routing_is_believed_more() -> None:
    skewed = [40] * 32 + [10] * 96  # the top quarter takes 4/7 of the selections
    small = predicted_hit_rate(32, 128, 8, [skewed], [0])
    large = predicted_hit_rate(32, 128, 8, [[10 * c for c in skewed]], [0])
    assert small.high < large.high < 4 / 7
    assert large.high == pytest.approx(4 / 7, abs=0.005)


def test_layers_weigh_equally_and_one_without_counts_gets_typical_routing() -> None:
    a, b = [60, 20, 10, 10], [600, 200, 100, 100]
    both = predicted_hit_rate(1, 4, 1, [a, b], [0, 1])
    each = [predicted_hit_rate(1, 4, 1, [row], [0]) for row in (a, b)]
    assert both.high == pytest.approx((each[0].high + each[1].high) / 2)
    unknown = predicted_hit_rate(1, 4, 1, [a, [0, 0, 0, 0]], [0, 1])
    assert unknown.high == pytest.approx((each[0].high + top_share(0.25)) / 2)
    assert unknown.low == pytest.approx((each[0].low + 0.25) / 2)


def test_without_a_profile_typical_routing_gives_a_range_from_uniform_to_skewed() -> None:
    rate = predicted_hit_rate(32, 128, 8)
    assert (rate.low, rate.high, rate.source) == (0.25, pytest.approx(0.6), "typical routing")
    assert str(rate) == "25-60%"
    assert predicted_hit_rate(128, 128, 8).low == 1.0  # every expert held
    assert predicted_hit_rate(0, 128, 8).high == 0.0
    assert predicted_hit_rate(32, 128, 8, policy="off").high == 0.0
    dynamic = predicted_hit_rate(32, 128, 8, policy="dynamic")
    # uniform routing leaves it nothing to track; skewed, it finds the hot set and some repeats
    assert dynamic.low == rate.low and dynamic.high > rate.high


def test_dynamic_is_predicted_from_the_static_sets_optimistic_end_up() -> None:
    # a profile with a clear hot quarter: the dynamic policy finds the text's own hot set (what
    # the in-sample skew shrunk for chance alone says), and catches some of the repeats
    counts = [[60 if e < 32 else 8 for e in range(128)] for _ in range(4)]
    static = predicted_hit_rate(32, 128, 8, counts, [0, 1, 2, 3])
    dynamic = predicted_hit_rate(32, 128, 8, counts, [0, 1, 2, 3], policy="dynamic")
    assert static.low < static.high == dynamic.low < dynamic.high
    assert dynamic.high - dynamic.low == pytest.approx(0.25 * 0.4 * (1 - static.high))


def test_only_models_with_plain_expert_tensors_can_be_cached() -> None:
    assert cacheable(QWEN3_30B_Q4)
    assert not cacheable(model_from_spec(SyntheticSpec.preset("tiny-gpt-oss")))  # expert biases


def plan(experts_in_ram: str | int = "all", **fields: object) -> PlacementPlan:
    return dataclasses.replace(PlacementPlan(n_ctx=4096, n_threads=16, flash_attn="on",
                                             experts_in_ram=experts_in_ram), **fields)


def test_hot_experts_move_the_hits_expert_reads_to_the_gpu() -> None:
    model = QWEN3_30B_Q4
    off = predict(model, plan(), ON_GPU, SERVER_RAM, 16)
    cached = predict(model, plan(expert_cache="static", expert_cache_slots=32), ON_GPU, SERVER_RAM, 16)
    hit = cached.expert_hit_rate
    assert hit is not None and off.expert_hit_rate is None
    routed = sum(t.n_bytes for t in model.tensors if t.tensor_class == "routed_experts") * 8 / 128
    moved = off.decode_bytes["CPU"] - cached.decode_bytes["CPU"]
    assert moved == pytest.approx(hit.mid * routed, rel=1e-6)
    assert cached.decode_bytes["CUDA0"] - off.decode_bytes["CUDA0"] == pytest.approx(moved, rel=1e-6)
    assert cached.decode.low > off.decode.low and cached.decode.high > off.decode.high
    # a prompt's ubatches copy the experts the packs do not hold (the rest from VRAM)
    assert cached.prefill_copy_bytes == pytest.approx(off.prefill_copy_bytes * 96 / 128, rel=1e-6)
    assert cached.prefill.low > off.prefill.low and cached.prefill.high > off.prefill.high


def test_more_hits_decode_faster_and_a_cache_serving_little_costs_its_split() -> None:
    model = QWEN3_30B_Q4
    cache = plan(expert_cache="static", expert_cache_slots=16)
    skewed = [[100] * 16 + [1] * 112 for _ in range(model.n_layer)]
    uniform = [uniform_counts(512, seed=layer) for layer in range(model.n_layer)]
    fast = predict(model, cache, ON_GPU, SERVER_RAM, 16, profile=skewed)
    slow = predict(model, cache, ON_GPU, SERVER_RAM, 16, profile=uniform)
    assert fast.expert_hit_rate.low > 0.5 > slow.expert_hit_rate.high  # type: ignore[union-attr]
    assert fast.decode.low > slow.decode.low and fast.decode.high > slow.decode.high
    assert slow.expert_hit_rate.low == pytest.approx(0.125, abs=0.01)  # type: ignore[union-attr]
    # one expert a layer serves under 1% with uniform routing: too little to pay for the nodes
    # the split adds to every cached layer
    one = predict(model, plan(expert_cache="static", expert_cache_slots=1), ON_GPU, SERVER_RAM, 16,
                  profile=uniform)
    off = predict(model, plan(), ON_GPU, SERVER_RAM, 16)
    assert one.decode.low < off.decode.low and one.decode.high < off.decode.high


def test_the_packs_expert_stage_costs_a_token_only_what_it_takes_past_the_cpu_s_part(monkeypatch) -> None:
    # patch 0004 launches each cached layer's pack stage beside the layer's CPU part (the H100's
    # profiles: 48 cached layers added no launch time over n-cpu-moe's 36 layers in RAM)
    model = QWEN3_30B_Q4

    def decode(slots: int, pack_stage_nodes: int) -> SpeedRange:
        monkeypatch.setattr(speed, "STAGE_NODES", (13, 7, pack_stage_nodes))
        cache = plan(expert_cache="static", expert_cache_slots=slots)
        return predict(model, cache, ON_GPU, SERVER_RAM, 16, profile=[[1] * 128] * model.n_layer).decode

    # a quarter held: the CPU's part of each layer outlasts even a pack stage ten times as long
    assert decode(32, 80) == decode(32, 8)
    # every expert held: nothing on the CPU to hide it behind
    assert decode(128, 80).high < 0.9 * decode(128, 8).high


def test_a_cache_that_cannot_serve_leaves_the_prediction_as_it_was() -> None:
    model = QWEN3_30B_Q4
    for where, gpus in (("all", {}), ("none", ON_GPU)):  # no GPU; no experts in RAM
        off = predict(model, plan(where), gpus, SERVER_RAM, 16)
        on = predict(model, plan(where, expert_cache="static", expert_cache_slots=32), gpus, SERVER_RAM, 16)
        assert on == off and on.expert_hit_rate is None


def test_eager_copies_are_predicted_above_thrifty_ones() -> None:
    counts = [[60 if e < 32 else 8 for e in range(128)] for _ in range(4)]
    thrifty = predicted_hit_rate(32, 128, 8, counts, [0, 1, 2, 3], policy="dynamic")
    eager = predicted_hit_rate(32, 128, 8, counts, [0, 1, 2, 3], policy="dynamic", copies="eager")
    static = predicted_hit_rate(32, 128, 8, counts, [0, 1, 2, 3], copies="eager")
    assert static == predicted_hit_rate(32, 128, 8, counts, [0, 1, 2, 3])  # a static set copies nothing
    assert thrifty.high == eager.low < eager.high
    assert eager.high - static.high == pytest.approx(0.6 * 0.4 * (1 - static.high))


def test_eager_with_its_copies_capped_is_predicted_between_thrifty_and_eager() -> None:
    counts = [[60 if e < 32 else 8 for e in range(128)] for _ in range(4)]
    layers = [0, 1, 2, 3]

    def rate(copies: str, uploads: int = 0) -> HitRate:
        return predicted_hit_rate(32, 128, 8, counts, layers, policy="dynamic", copies=copies,
                                  uploads=uploads)

    thrifty, eager = rate("thrifty"), rate("eager")
    # 4 cached layers: a cap of 4 copies a token is 1 a layer, between thrifty's 0.4 and eager's 1.6
    capped = [rate("eager", uploads) for uploads in (2, 4, 6)]
    assert thrifty.low < capped[0].low < capped[1].low < capped[2].low < eager.low
    assert thrifty.high < capped[0].high < capped[1].high < capped[2].high < eager.high
    # 1 a layer is half the way in copies, sqrt(1/2) of it in hits (the largest gains first)
    assert capped[1].mid == pytest.approx(thrifty.mid + 0.5**0.5 * (eager.mid - thrifty.mid))
    assert rate("eager", 8) == eager  # 2 a layer: more than eager makes, no cap
    # below thrifty's 0.4 copies a layer, either setting falls towards the static set
    static = predicted_hit_rate(32, 128, 8, counts, layers)
    assert static.mid < rate("eager", 1).mid == rate("thrifty", 1).mid < thrifty.mid
    # the copies the speed model counts follow the cap
    model = QWEN3_30B_Q4
    dynamic = plan(expert_cache="dynamic", expert_cache_slots=32, use_mmap=False, expert_cache_policy="eager")
    own, capped_48 = (hot_experts(model, dataclasses.replace(dynamic, expert_cache_uploads=n), ["CUDA0"])
                      for n in (0, 48))
    assert own is not None and capped_48 is not None
    assert capped_48.copy_bytes["CUDA0"] == pytest.approx(own.copy_bytes["CUDA0"] / 1.6)


def test_dynamic_copies_share_ram_beside_decoding_and_are_waited_for_from_the_mapped_file() -> None:
    model = QWEN3_30B_Q4
    skewed = [[100] * 32 + [10] * 96 for _ in range(model.n_layer)]
    pinned = plan(expert_cache="dynamic", expert_cache_slots=32, use_mmap=False)

    def decode(ram: RamBandwidth, **fields: object) -> SpeedRange:
        return predict(model, dataclasses.replace(pinned, **fields), ON_GPU, ram, 16, profile=skewed).decode

    # SERVER_RAM: 16 threads could read more than RAM gives, so RAM bounds the CPU's reads,
    # and the copies' reads come out of them: eager's extra copies cost more than its hits save
    assert decode(SERVER_RAM, expert_cache_policy="eager").high < decode(SERVER_RAM).high
    # cores that read slowly beside plenty of RAM bandwidth: the copies cost the CPU nothing (and
    # the CPU's part of a token is long enough for them on the link)
    cores_bound = dataclasses.replace(SERVER_RAM, read_bw=250e9, read_bw_1=6e9)
    assert decode(cores_bound, expert_cache_policy="eager").high > decode(cores_bound).high
    # the CPU kernels' rate measured (the kernel probe): far under the RAM's, the copies take
    # what the CPU leaves; near it, they take from the CPU as before
    def timed(rate: float) -> RamBandwidth:
        return dataclasses.replace(SERVER_RAM, expert_read=ExpertReadRate(rate, 16, "Q4_0"))

    slow_cores, fast_cores = timed(30e9), timed(75e9)
    assert decode(slow_cores, expert_cache_policy="eager").mid > decode(slow_cores).mid
    assert decode(fast_cores, expert_cache_policy="eager").mid < decode(fast_cores).mid
    # from the mapped file each token waits for its copies (and eager copies thriftily there)
    mapped = decode(SERVER_RAM, use_mmap=True)
    assert mapped.low < decode(SERVER_RAM).low and mapped.high < decode(SERVER_RAM).high
    assert decode(SERVER_RAM, use_mmap=True, expert_cache_policy="eager") == mapped


def test_copies_that_outlast_the_cpu_s_part_of_a_token_on_the_link_lengthen_it() -> None:
    model = QWEN3_30B_Q4
    skewed = [[100] * 32 + [10] * 96 for _ in range(model.n_layer)]
    cores_bound = dataclasses.replace(SERVER_RAM, read_bw=250e9, read_bw_1=6e9)

    def decode(pinned: float, policy: str) -> SpeedRange:
        link = HostCopyRates(gpu=H100.name, pageable=9e9, pinned=pinned, mapped=9e9, copy_bytes=256 << 20)
        dynamic = plan(expert_cache="dynamic", expert_cache_slots=32, use_mmap=False,
                       expert_cache_policy=policy)
        return predict(model, dynamic, ON_GPU, dataclasses.replace(cores_bound, host_copy=link), 16,
                       profile=skewed).decode

    # eager's ~200 MB of copies a token: under the CPU's part at 200 GB/s, past it at 15
    assert decode(15e9, "eager").high < 0.9 * decode(200e9, "eager").high
    assert decode(15e9, "eager").mid < decode(15e9, "thrifty").mid < decode(200e9, "eager").mid
    # thrifty's few copies fit under the CPU's part on either link
    assert decode(15e9, "thrifty") == decode(200e9, "thrifty")
