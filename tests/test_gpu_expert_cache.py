"""Hot experts in VRAM on a real GPU (engine patch 0004): the pack lands in VRAM, serves a share
of the selections of layers whose experts are in RAM, and a dynamic cache takes experts in.

Run on the accelerator machine: ``pytest -m gpu``. tests/test_expert_cache.py checks the same
split on a CPU; bench/expert_cache.py measures its speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import LoadParams
from app.gguf.info import read_model
from tests import gpu_testing
from tests.gpu_testing import decode, load
from tests.moe_logits import logits

pytestmark = pytest.mark.gpu


realistic_q30 = gpu_testing.realistic_q30  # the fixture, where pytest looks for it


def test_a_static_cache_lands_in_vram_and_serves_the_hot_experts(
        engine: EngineClient, realistic_q30: Path) -> None:
    info = read_model(realistic_q30)
    loaded = load(engine, realistic_q30, expert_cache="static", expert_cache_slots=32)
    cache = loaded.expert_cache
    assert cache is not None and cache.available, cache
    assert cache.layers == info.moe_layers and cache.slots == 32
    packs = 32 * sum(info.expert_bytes([il]) for il in info.moe_layers)
    assert packs <= cache.bytes <= packs * 1.01 + 2**20  # the packs, plus maps and alignment
    assert decode(engine)
    routing = engine.routing()
    assert all(len(held) == 32 for held in routing.cached)
    # a quarter of the experts, ranked by the warm-up, under routing like Qwen3's
    assert routing.hit_rate is not None and routing.hit_rate > 0.35
    assert all(rate is not None and rate > 0.2 for rate in routing.layer_hit_rate)


def test_a_dynamic_cache_takes_experts_in_as_it_decodes(engine: EngineClient, realistic_q30: Path) -> None:
    info = read_model(realistic_q30)
    # start from the experts the warm-up chose least
    warm = load(engine, realistic_q30, expert_cache="static", expert_cache_slots=16)
    assert warm.expert_cache is not None and warm.expert_cache.available
    coldest = [[-c for c in row] for row in warm.expert_cache.profile]
    # the engine's default copies: one a cached layer and token at most, fewer if they fall behind
    placement = PlacementPlan(n_ctx=1024, split_mode="none", experts_in_ram="all",
                              expert_cache="dynamic", expert_cache_slots=16)
    engine.load(LoadParams(model=str(realistic_q30), placement=placement, expert_profile=coldest))
    before = engine.routing().cached
    assert decode(engine, tokens=96)
    after = engine.routing()
    assert after.cached != before and len(after.cached) == len(info.moe_layers)
    assert after.hit_rate is not None and after.hit_rate > 0.2


def test_dynamic_copies_run_beside_decoding_from_pinned_memory_only(
        engine: EngineClient, realistic_q30: Path) -> None:
    # with mmap, llama.cpp leaves CPU weights in the mapped file (pageable): each token waits
    mapped = load(engine, realistic_q30, expert_cache="dynamic", expert_cache_slots=16,
                  expert_cache_policy="eager")
    assert mapped.expert_cache is not None and not mapped.expert_cache.copies_beside_decoding
    assert mapped.expert_cache.copy_policy == "thrifty"  # eager's copies would each be waited for
    # mmap off: CPU weights in the GPU's pinned host buffer, copied on a stream of their own
    pinned = load(engine, realistic_q30, expert_cache="dynamic", expert_cache_slots=16, use_mmap=False)
    assert pinned.expert_cache is not None and pinned.expert_cache.copies_beside_decoding
    assert decode(engine, tokens=32)
    assert engine.stats().expert_cache.uploads > 16 * 4  # the initial set, then copies


def test_eager_copies_serve_more_hits_beside_decoding(engine: EngineClient, realistic_q30: Path) -> None:
    # from pinned memory the copies run on the GPU's copy engine: eager trades more of them
    # for more hits (tests/test_expert_cache.py checks the same policies on a CPU)
    def dynamic_run(policy: str) -> tuple[float, int]:
        loaded = load(engine, realistic_q30, expert_cache="dynamic", expert_cache_slots=16, use_mmap=False,
                      expert_cache_policy=policy)
        assert loaded.expert_cache is not None and loaded.expert_cache.copies_beside_decoding
        assert loaded.expert_cache.copy_policy == policy
        given = engine.stats().expert_cache.uploads
        assert decode(engine, tokens=192)
        hit_rate = engine.routing().hit_rate
        assert hit_rate is not None
        return hit_rate, engine.stats().expert_cache.uploads - given

    thrifty_hits, thrifty_copies = dynamic_run("thrifty")
    eager_hits, eager_copies = dynamic_run("eager")
    assert eager_copies > 1.5 * thrifty_copies
    assert eager_hits > thrifty_hits + 0.03


def test_paced_copies_keep_the_hits_of_copies_issued_at_once(realistic_q30: Path) -> None:
    # paced copies (patch 0004, on unless LLAMA_MOE_CACHE_PACED_UPLOADS=0): a step's copies issued
    # through the next token, a share after each split that took the CPU's results, not all at
    # once between tokens; they are mapped at the same step, so as many copies for as many hits
    def eager_run(**env: str) -> tuple[float, int, str]:
        with EngineClient.spawn(env=env) as engine:
            loaded = load(engine, realistic_q30, expert_cache="dynamic", expert_cache_slots=16,
                          use_mmap=False, expert_cache_policy="eager")
            assert loaded.expert_cache is not None and loaded.expert_cache.copies_beside_decoding
            given = engine.stats().expert_cache.uploads
            text = decode(engine, tokens=192)
            hit_rate = engine.routing().hit_rate
            assert hit_rate is not None
            return hit_rate, engine.stats().expert_cache.uploads - given, text

    at_once_hits, at_once_copies, _ = eager_run(LLAMA_MOE_CACHE_PACED_UPLOADS="0")
    paced_hits, paced_copies, text = eager_run()
    assert text and paced_copies > 16 * 4
    assert paced_copies > 0.8 * at_once_copies and paced_hits > at_once_hits - 0.03


PROMPTS = [
    "Route me through the experts of every layer, " * 8,
    "A long prompt runs on the GPU one ubatch at a time, its experts copied from RAM. " * 5,
    "Which experts does this paragraph choose, and how often does each of them repeat? " * 5,
]


def first_tokens(engine: EngineClient) -> list[str]:
    """Each prompt's greedy first token: the prompt's ubatch alone decides it."""
    return [decode(engine, tokens=1, prompt=prompt) for prompt in PROMPTS]


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_a_prompt_takes_the_experts_the_cache_holds_from_vram(
        engine: EngineClient, realistic_q30: Path, mode: str) -> None:
    # a prompt's ubatch computes the layers with experts in RAM on the GPU, llama.cpp copying
    # the experts its tokens chose; those in the cache come from VRAM, so the prompt copies
    # fewer bytes and its logits are the same bytes' products as without the cache
    load(engine, realistic_q30, use_mmap=False)
    without = first_tokens(engine)
    loaded = load(engine, realistic_q30, use_mmap=False, expert_cache=mode, expert_cache_slots=32)
    assert loaded.expert_cache is not None and loaded.expert_cache.available
    if mode == "dynamic":
        assert decode(engine, tokens=64)  # the policy moves experts into other slots
        assert engine.stats().expert_cache.uploads > 32 * len(loaded.expert_cache.layers)
    before = engine.stats().expert_cache.prompt_experts_from_vram
    assert first_tokens(engine) == without
    taken = engine.stats().expert_cache.prompt_experts_from_vram - before
    # up, gate and down of the held experts the prompts' tokens chose, in each cached layer
    layers = len(loaded.expert_cache.layers)
    assert 3 * layers * len(PROMPTS) * 8 <= taken <= 3 * layers * len(PROMPTS) * 32


def cached_logits(model: Path, out: Path, *args: str, **env: str) -> tuple[np.ndarray, int]:
    """tests/moe_logits.py's logits with the rest of the model on the GPU, and the experts a
    prompt took from the cache's packs (0 without a cache)."""
    values = logits(model, out, "--gpu", *args, **env)
    taken = Path(f"{out}.from_vram")
    return values, int(taken.read_text()) if taken.exists() else 0


def test_a_prompts_experts_from_vram_give_the_logits_of_those_from_ram(
        realistic_moe_gguf: Path, tmp_path: Path) -> None:
    # a 64-token prompt's MoE layers on the GPU (op offload); a static cache of 16 experts a
    # layer (every third: the experts from RAM come in many runs). The held experts are copied
    # in one launch a weight (GGML_SCHED_COPY_BATCH, the default), one copy each, or not taken
    # from VRAM at all: the same bytes, so the prompt's logits are those without the cache, and
    # the decoded tokens' (hot experts on the GPU, the rest on the CPU) the same in all three.
    # All four from pinned memory (mmap off), as the engine loads a dynamic cache's model, and
    # with every prompt row's logits asked for: asked for the last row's only, llama.cpp gives
    # the last layer one row, which the cache computes as a decoded token's (the eighteenth
    # session's H100 run compared such a prompt with one without the cache, and they differed)
    def run(name: str, *args: str, **env: str) -> tuple[np.ndarray, int]:
        return cached_logits(realistic_moe_gguf, tmp_path / f"{name}.npy", "--prompt", "64", "--no-mmap",
                             "--every-row", *args, **env)

    without, _ = run("without")
    from_ram, taken_from_ram = run("from-ram", "--cache", "16", LLAMA_MOE_CACHE_PROMPT_FROM_VRAM="0")
    one_by_one, taken_one_by_one = run("one-by-one", "--cache", "16", GGML_SCHED_COPY_BATCH="0")
    batched, taken = run("batched", "--cache", "16")
    assert np.isfinite(batched).all()
    assert np.array_equal(from_ram[0], without[0]), "the cache's presence changed the prompt's logits"
    assert np.array_equal(one_by_one[0], from_ram[0]), "experts copied from VRAM changed the prompt's logits"
    assert np.array_equal(batched[0], one_by_one[0]), "the batched copy changed the prompt's logits"
    assert np.array_equal(batched, one_by_one) and np.array_equal(batched, from_ram)
    # up, gate and down of the held experts the prompt's tokens chose, in every layer
    info = read_model(realistic_moe_gguf)
    assert 3 * info.n_layer <= taken == taken_one_by_one <= 3 * info.n_layer * 16 and taken_from_ram == 0


# The scheduler's copies between the GPU and a CPU split (patch 0004): llama.cpp's, a
# synchronisation and a blocking copy each, or queued on the GPU's stream (the variable, its
# value off and on; both on by default): a CPU split's inputs from the GPU, waited for once, and
# its results to the GPU from the pinned compute buffer.
QUEUED_COPIES = {"cpu-inputs": ("GGML_SCHED_ASYNC_CPU_INPUTS", "0", "1"),
                 "cpu-results": ("GGML_SCHED_ASYNC_DEVICE_INPUTS", "0", "1")}


@pytest.mark.parametrize("copies", sorted(QUEUED_COPIES))
@pytest.mark.parametrize("cache", [False, True])
def test_copies_queued_on_the_gpus_stream_give_the_same_logits(
        realistic_moe_gguf: Path, tmp_path: Path, cache: bool, copies: str) -> None:
    # the same bytes reach the CPU and the GPU, so every logit is the same (with a cache, its
    # hot experts launched between a CPU split's queued inputs and the wait for them)
    variable, off, on = QUEUED_COPIES[copies]
    args = ("--cache", "16") if cache else ()

    def run(name: str, **env: str) -> np.ndarray:
        out = tmp_path / f"{name}.npy"
        values, _ = cached_logits(realistic_moe_gguf, out, "--tokens", "40", *args, **env)
        return values

    blocking = run("blocking", **{variable: off})
    queued = run("queued", **{variable: on})
    assert np.isfinite(queued).all() and np.array_equal(queued, blocking)
