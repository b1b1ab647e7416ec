"""Hot experts in VRAM (engine patch 0004), driven through the real engine on a CPU.

Without a GPU the cache is unavailable to users. The engine's test switch
(MOEDESK_EXPERT_CACHE_HOST=1) puts the packs in RAM instead, which gains nothing but runs the
same split of each MoE layer (cold selections on the CPU from the model's tensors, hot ones
from the pack, summed), so the answer, the hit counting and the refresh are checked here;
tests/test_gpu_expert_cache.py checks them on CUDA.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app import cli_load
from app.advisor.memory import memory_by_device
from app.engine import ggml_backend, telemetry
from app.engine.client import EngineClient
from app.engine.expert_cache import HOST_PACKS_ENV
from app.engine.placement import PlacementPlan
from app.engine.protocol import WAITING_COPIES, ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.gguf.info import read_model
from app.ui.dashboard.series import RoutingWindow

PROMPT = "Tell me about the experts of this model, one by one, with their habits"


@pytest.fixture(scope="module")
def host_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MoE Desk's folders for the engine below: its remembered routing profiles start empty."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def host_engine(host_home: Path) -> Iterator[EngineClient]:
    """An engine allowed to keep the cache's packs in RAM (no GPU here)."""
    with EngineClient.spawn(env={HOST_PACKS_ENV: "1", "MOEDESK_HOME": str(host_home)}) as client:
        yield client


def load(engine: EngineClient, model: Path, profile: list[list[int]] | None = None,
         **cache: object) -> LoadResult:
    # weights as in the file: the pack is copied from the expert tensors' own layout
    plan = PlacementPlan(n_ctx=512, experts_in_ram="all", repack=False, n_threads=2, **cache)  # type: ignore[arg-type]
    return engine.load(LoadParams(model=str(model), placement=plan, expert_profile=profile))


def answer(engine: EngineClient, tokens: int = 24) -> str:
    stream = engine.chat(ChatParams(messages=[ChatMessage(role="user", content=PROMPT)],
                                    sampling=Sampling(temperature=0.0, max_tokens=tokens,
                                                      ignore_eos=True)))
    return "".join(token.text for token in stream)


def test_the_engine_build_has_the_expert_cache_patch() -> None:
    # CI builds the engine from app/engine/patches: a missing 0004 would silently leave the
    # cache unavailable everywhere
    assert ggml_backend.has_cache_patch()


def test_hot_experts_serve_a_share_of_selections_and_the_answer_stays_the_same(
        host_engine: EngineClient, realistic_moe_gguf: Path) -> None:
    info = read_model(realistic_moe_gguf)
    load(host_engine, realistic_moe_gguf)
    plain = answer(host_engine)

    loaded = load(host_engine, realistic_moe_gguf, expert_cache="static", expert_cache_slots=32)
    cache = loaded.expert_cache
    assert cache is not None and cache.available, cache
    assert cache.slots == 32 and cache.layers == info.moe_layers
    assert cache.profile_source == "warm-up" and len(cache.profile) == info.n_layer
    assert cache.bytes > 0
    assert answer(host_engine) == plain  # the same greedy answer with the split

    routing = host_engine.routing()
    assert all(len(experts) == 32 for experts in routing.cached)
    # realistic routing: a quarter of the experts, ranked by the warm-up, take a good share
    assert routing.hit_rate is not None and 0.25 < routing.hit_rate < 1.0
    assert all(rate is not None and rate > 0 for rate in routing.layer_hit_rate)


def test_the_memory_model_counts_the_cache_as_the_engine_allocates_it(
        host_engine: EngineClient, realistic_moe_gguf: Path) -> None:
    info = read_model(realistic_moe_gguf)
    plan = PlacementPlan(n_ctx=512, experts_in_ram="all", repack=False, expert_cache="static",
                         expert_cache_bytes=2**20)
    on_gpu = {d.device: d.weights for d in memory_by_device(info, plan, ["CUDA0"])}
    off = replace(plan, expert_cache="off")
    without = {d.device: d.weights for d in memory_by_device(info, off, ["CUDA0"])}
    packs = on_gpu["CUDA0"] - without["CUDA0"]
    assert packs > 0 and on_gpu["CPU"] == without["CPU"]  # the experts stay in RAM too

    loaded = load(host_engine, realistic_moe_gguf, expert_cache="static", expert_cache_bytes=2**20)
    cache = loaded.expert_cache
    assert cache is not None and cache.available
    assert packs == cache.slots * sum(info.expert_bytes([il]) for il in cache.layers)
    assert packs <= cache.bytes <= packs + 64 * 1024  # plus its maps and alignment
    assert cache.bytes <= 2**20  # the size asked for holds it

    no_gpu = {d.device: d.weights for d in memory_by_device(info, plan, [])}
    assert no_gpu["CPU"] == without["CPU"] + without["CUDA0"]  # no GPU: no cache, all in RAM


def test_a_given_profile_decides_which_experts_are_held(
        host_engine: EngineClient, realistic_moe_gguf: Path) -> None:
    info = read_model(realistic_moe_gguf)
    # the profile of an earlier run, as the app remembers it: here experts 100.. rank first
    profile = [[e if e >= 100 else 0 for e in range(info.n_expert)] for _ in range(info.n_layer)]
    loaded = load(host_engine, realistic_moe_gguf, profile, expert_cache="static", expert_cache_slots=8)
    assert loaded.expert_cache is not None and loaded.expert_cache.profile_source == "given"
    answer(host_engine, tokens=8)
    assert host_engine.routing().cached == [list(range(120, 128))] * len(info.moe_layers)


def test_served_counts_give_the_hit_rate_of_the_tokens_between_two_snapshots(
        host_engine: EngineClient, realistic_moe_gguf: Path) -> None:
    # the dashboard's recent hit rate: a long prompt (llama.cpp's path: read from RAM) must
    # not weigh on the hit rate of the tokens decoded after it
    load(host_engine, realistic_moe_gguf, expert_cache="static", expert_cache_slots=32)
    long_prompt = " ".join([PROMPT] * 12)  # ~200 tokens: ubatches far over the split's 32
    prompt = host_engine.chat(ChatParams(messages=[ChatMessage(role="user", content=long_prompt)],
                                         sampling=Sampling(max_tokens=1))).result
    assert prompt.prompt_tokens > 128
    after_prompt, cache_before = host_engine.routing(), host_engine.stats().expert_cache
    decode = host_engine.chat(ChatParams(messages=[ChatMessage(role="user", content="Go on")],
                                         sampling=Sampling(max_tokens=24, ignore_eos=True))).result
    assert decode.prompt_tokens - decode.cached_tokens < 32  # its prompt takes the split too
    after, cache_after = host_engine.routing(), host_engine.stats().expert_cache
    assert cache_before is not None and cache_after is not None
    assert sum(after.served) == cache_after.hits  # every MoE layer is a cached one here
    hits = cache_after.hits - cache_before.hits
    decoded = hits + cache_after.misses - cache_before.misses  # a short prompt: all split
    assert decoded == sum(map(sum, after.counts)) - sum(map(sum, after_prompt.counts))

    window = RoutingWindow(window_s=5.0)
    window.restart(from_zero=True)
    window.add(0.0, after_prompt)
    window.add(10.0, after)
    assert window.hit_rate() == pytest.approx(hits / decoded)
    assert after.hit_rate is not None and after.hit_rate < hits / decoded - 0.1  # since load


def test_dynamic_takes_in_the_experts_routing_asks_for(
        host_engine: EngineClient, realistic_moe_gguf: Path) -> None:
    info = read_model(realistic_moe_gguf)
    # start from the least chosen experts of a warm-up, so the set has to move
    warm = load(host_engine, realistic_moe_gguf, expert_cache="static", expert_cache_slots=16)
    assert warm.expert_cache is not None
    coldest = [[-c for c in row] for row in warm.expert_cache.profile]

    load(host_engine, realistic_moe_gguf, coldest, expert_cache="static", expert_cache_slots=16)
    plain = answer(host_engine, tokens=48)
    static = host_engine.routing()

    load(host_engine, realistic_moe_gguf, coldest, expert_cache="dynamic", expert_cache_slots=16,
         expert_cache_uploads=8)
    before = host_engine.routing().cached
    # experts are copied in on the cache's own thread while tokens decode: an expert enters
    # the maps only once its copy is whole, so the answer is the one without uploads
    assert answer(host_engine, tokens=48) == plain
    dynamic = host_engine.routing()
    assert dynamic.cached != before  # experts came in
    assert len(dynamic.cached) == len(info.moe_layers)
    assert static.hit_rate is not None and dynamic.hit_rate is not None
    assert dynamic.hit_rate > static.hit_rate + 0.05


def test_dynamic_copies_only_experts_that_pay_for_their_copy(
        host_engine: EngineClient, realistic_moe_gguf: Path) -> None:
    # A copy reads an expert's bytes as a miss does: copying every expert missed twice (the
    # first policy) copied ~1.2 experts a layer and token here, more than its extra hits saved.
    info = read_model(realistic_moe_gguf)
    warm = load(host_engine, realistic_moe_gguf, expert_cache="static", expert_cache_slots=16)
    assert warm.expert_cache is not None
    profile = warm.expert_cache.profile
    load(host_engine, realistic_moe_gguf, profile, expert_cache="static", expert_cache_slots=16)
    answer(host_engine, tokens=96)
    static = host_engine.routing()

    load(host_engine, realistic_moe_gguf, profile, expert_cache="dynamic", expert_cache_slots=16)
    loaded_uploads = host_engine.stats().expert_cache.uploads  # the given set's own copies
    answer(host_engine, tokens=96)
    dynamic = host_engine.routing()
    copies = host_engine.stats().expert_cache.uploads - loaded_uploads
    assert 0 < copies <= 0.5 * 96 * len(info.moe_layers)
    assert static.hit_rate is not None and dynamic.hit_rate is not None
    assert dynamic.hit_rate > static.hit_rate + 0.03


def test_eager_copies_trade_more_copies_for_more_hits(
        host_engine: EngineClient, realistic_moe_gguf: Path) -> None:
    # where the GPU's copy engine reads beside a CPU bound by compute, copies cost the CPU
    # nothing: "eager" keeps a shorter memory, a lower margin and two copies a layer and token
    tokens = 192  # the policies differ by a few points: enough tokens to see it

    def dynamic_run(policy: str, uploads: int = 0) -> tuple[float, int]:
        loaded = load(host_engine, realistic_moe_gguf, profile, expert_cache="dynamic", expert_cache_slots=16,
                      expert_cache_policy=policy, expert_cache_uploads=uploads)
        assert loaded.expert_cache is not None and loaded.expert_cache.copy_policy == policy
        loaded_uploads = host_engine.stats().expert_cache.uploads
        answer(host_engine, tokens=tokens)
        hit_rate = host_engine.routing().hit_rate
        assert hit_rate is not None
        return hit_rate, host_engine.stats().expert_cache.uploads - loaded_uploads

    warm = load(host_engine, realistic_moe_gguf, expert_cache="static", expert_cache_slots=16)
    assert warm.expert_cache is not None
    profile = warm.expert_cache.profile
    thrifty_hits, thrifty_copies = dynamic_run("thrifty")
    eager_hits, eager_copies = dynamic_run("eager")
    layers = len(read_model(realistic_moe_gguf).moe_layers)
    assert eager_copies > 1.5 * thrifty_copies
    assert eager_copies <= 2 * tokens * layers  # two a layer and token at most
    assert eager_hits > thrifty_hits + 0.03
    # capped at 3/4 of a copy a layer and token, the largest score gains are copied first: most
    # of eager's gain for ~60% of its copies (here 72%; dealt out layer by layer from a first
    # layer moving on one a token, as before, 39%)
    capped_hits, capped_copies = dynamic_run("eager", uploads=3 * layers // 4)
    assert capped_copies <= tokens * (3 * layers // 4) + 3 * layers  # (+ the prompt's steps)
    assert capped_hits - thrifty_hits > 0.55 * (eager_hits - thrifty_hits)


def test_the_routing_of_a_run_ranks_the_experts_at_the_next_load(
        host_engine: EngineClient, host_home: Path, tmp_path: Path, realistic_moe_gguf: Path) -> None:
    # a model file of its own, so that no other test's runs are in its profile
    model = tmp_path / "remembered.gguf"
    model.write_bytes(realistic_moe_gguf.read_bytes())
    info = read_model(model)
    first = load(host_engine, model, expert_cache="static", expert_cache_slots=8)
    assert first.expert_cache is not None and first.expert_cache.profile_source == "warm-up"
    answer(host_engine, tokens=32)
    used = host_engine.routing().counts
    host_engine.unload()  # the run's routing joins the model's profile

    again = load(host_engine, model, expert_cache="static", expert_cache_slots=8)
    assert again.expert_cache is not None and again.expert_cache.profile_source == "remembered"
    assert again.expert_cache.profile == used
    assert "this model's earlier runs" in again.expert_cache.describe()
    expected = [sorted(sorted(range(info.n_expert), key=lambda e: -row[e])[:8]) for row in used]
    ranked = [sorted(held) for held in host_engine.routing().cached]
    # ties at the cut may rank either way: compare how many of each layer's chosen experts agree
    assert all(len(set(a) & set(b)) >= 6 for a, b in zip(ranked, expected, strict=True))
    answer(host_engine, tokens=16)
    more = host_engine.routing().counts
    host_engine.unload()
    profiles = (host_home / "cache" / "routing-profiles.json")
    assert profiles.exists()
    third = load(host_engine, model, expert_cache="static", expert_cache_slots=8)
    assert third.expert_cache is not None
    assert third.expert_cache.profile == [[a + b for a, b in zip(x, y, strict=True)]
                                          for x, y in zip(used, more, strict=True)]


def test_without_a_gpu_the_cache_is_unavailable_and_the_model_runs_as_before(
        engine: EngineClient, tiny_moe_gguf: Path) -> None:
    loaded = load(engine, tiny_moe_gguf, expert_cache="static", expert_cache_slots=2)
    assert loaded.expert_cache is not None and not loaded.expert_cache.available
    assert "GPU" in loaded.expert_cache.reason
    assert "unavailable" in loaded.expert_cache.describe()
    assert answer(engine, tokens=4)
    assert engine.routing().cached == [[]] * len(read_model(tiny_moe_gguf).moe_layers)


def test_cli_cache_size_is_experts_a_layer_or_gibibytes() -> None:
    assert cli_load.expert_cache_size("32") == (32, 0)
    assert cli_load.expert_cache_size("4GiB") == (0, 4 * 2**30)
    assert cli_load.expert_cache_size("1.5G") == (0, int(1.5 * 2**30))
    for bad in ("0", "-3", "lots", "GiB"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_load.expert_cache_size(bad)
    plan = PlacementPlan(expert_cache="dynamic", expert_cache_slots=32)
    assert "hot experts in VRAM: 32 experts a layer (dynamic)" in plan.describe()


def test_hit_rate_counts_cache_hits_as_served_from_vram() -> None:
    counts = [[6, 2], [5, 3], [4, 4]]  # three MoE layers, two experts, 8 selections each
    cache = ggml_backend.CacheStats(hits=[0, 5, 8], misses=[0, 3, 0], resident=[[], [0], [0, 1]],
                                    uploads=3)
    snapshot = telemetry.routing_snapshot(counts, 8, 1, [0, 1, 2], expert_layers_on_gpu={0}, cache=cache)
    # layer 0 wholly on the GPU; layer 1: 5 of 8 from the cache; layer 2: 8 reported, but only
    # 8 selections counted since the routing counts were read (never above 1)
    assert snapshot.layer_hit_rate == [1.0, 5 / 8, 1.0]
    assert snapshot.hit_rate == pytest.approx((8 + 5 + 8) / 24)
    assert snapshot.cached == [[], [0], [0, 1]]
    assert snapshot.served == [8, 5, 8]


def test_a_prompt_in_ubatches_small_enough_for_the_split_reads_through(
        host_engine: EngineClient, realistic_moe_gguf: Path) -> None:
    # ubatches under 32 tokens take the split, and a prompt's ubatches before its last want no
    # output, so llama.cpp's last layer gets no rows in them: the split must leave it alone
    # (it aborted in ggml_get_rows)
    load(host_engine, realistic_moe_gguf, n_batch=16, n_ubatch=16)
    plain = answer(host_engine, tokens=8)
    loaded = load(host_engine, realistic_moe_gguf, expert_cache="static", expert_cache_slots=32,
                  n_batch=16, n_ubatch=16)
    assert loaded.expert_cache is not None and loaded.expert_cache.available
    assert answer(host_engine, tokens=8) == plain


def test_a_dynamic_cache_says_when_each_token_waits_for_its_copies(
        host_engine: EngineClient, realistic_moe_gguf: Path, host_home: Path) -> None:
    # the test switch's packs take copies on a thread beside decoding
    beside = load(host_engine, realistic_moe_gguf, expert_cache="dynamic", expert_cache_slots=8)
    assert beside.expert_cache is not None and beside.expert_cache.copies_beside_decoding
    assert WAITING_COPIES not in beside.expert_cache.describe()
    # copies between steps (as from the mapped file with a GPU): the load says so and what to do
    with EngineClient.spawn(env={HOST_PACKS_ENV: "1", "MOEDESK_HOME": str(host_home),
                                 "LLAMA_MOE_CACHE_ASYNC": "0"}) as engine:
        waiting = load(engine, realistic_moe_gguf, expert_cache="dynamic", expert_cache_slots=8)
        assert waiting.expert_cache is not None and not waiting.expert_cache.copies_beside_decoding
        assert "--no-mmap" in waiting.expert_cache.describe()
        assert answer(engine, tokens=8)
        # each copy a token's wait: eager's many copies are not made
        eager = load(engine, realistic_moe_gguf, expert_cache="dynamic", expert_cache_slots=8,
                     expert_cache_policy="eager")
        assert eager.expert_cache is not None and eager.expert_cache.copy_policy == "thrifty"
        assert "dynamic, thrifty copies" in eager.expert_cache.describe()
