"""Splitting a model over several GPUs (needs a machine with two or more; elsewhere skipped,
and deselected entirely without a GPU build), hot experts in VRAM among them."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.advisor.memory import expert_cache_pack_devices, layer_devices
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.gguf.info import read_model
from app.synthetic import SyntheticSpec, write_synthetic_model
from tests import gpu_testing

pytestmark = pytest.mark.gpu

realistic_q30 = gpu_testing.realistic_q30  # the fixture, where pytest looks for it
MiB = 1024**2
# a layer split 1 : 1 of the 4-layer model and its output: layers 0-2 on the first GPU, 3 on the second
HALVES = {"split_mode": "layer", "tensor_split": [1.0, 1.0]}


@pytest.fixture(scope="module")
def gpus(engine: EngineClient) -> list[str]:
    names = [d.name for d in engine.info().devices if d.kind == "gpu"]
    if len(names) < 2:
        pytest.skip(f"needs two GPUs; this machine has {len(names)}")
    return names


@pytest.fixture(scope="module")
def model_8_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("q30-8l")
    (path,) = write_synthetic_model(folder / "q30-8l.gguf", SyntheticSpec.preset("qwen3-30b-a3b", n_layer=8))
    return path


def load(engine: EngineClient, model: Path, **plan: object) -> LoadResult:
    result = engine.load(LoadParams(model=str(model), placement=PlacementPlan(n_ctx=1024, **plan)))
    stream = engine.chat(ChatParams(messages=[ChatMessage("user", "split me")],
                                    sampling=Sampling(temperature=0.0, max_tokens=8, ignore_eos=True)))
    assert stream.result.completion_tokens == 8
    return result


def bytes_on(result: LoadResult, device: str, tensor_class: str | None = None) -> int:
    return sum(p.bytes for p in result.placement
               if p.device == device and (tensor_class is None or p.tensor_class == tensor_class))


@pytest.mark.parametrize("tensor_split", [[1.0, 1.0], [3.0, 1.0]])
def test_a_layer_split_spreads_layers_over_the_gpus_as_the_memory_model_says(
        engine: EngineClient, gpus: list[str], model_8_layers: Path, tensor_split: list[float]) -> None:
    plan = PlacementPlan(n_ctx=1024, split_mode="layer", tensor_split=tensor_split)
    result = load(engine, model_8_layers, split_mode="layer", tensor_split=tensor_split)
    # llama.cpp counts the output layer among the n_layer + 1 it splits: [1, 1] puts layers 0-4
    # on the first GPU and 5-7 with the output on the second; the advisor must agree
    devices = layer_devices(plan, 8, gpus[:2])[:8]
    per_layer = read_model(model_8_layers).bytes_by_class()["routed_experts"] // 8
    for gpu in gpus[:2]:
        assert bytes_on(result, gpu, "routed_experts") == devices.count(gpu) * per_layer, gpu
    assert devices.count(gpus[0]) > 0 and devices.count(gpus[1]) > 0


def test_split_mode_none_keeps_everything_on_the_main_gpu(
        engine: EngineClient, gpus: list[str], model_8_layers: Path) -> None:
    result = load(engine, model_8_layers, split_mode="none", main_gpu=1)
    assert bytes_on(result, gpus[0]) == 0 and bytes_on(result, gpus[1]) > 0


def test_experts_in_ram_with_the_rest_split_over_two_gpus(
        engine: EngineClient, gpus: list[str], model_8_layers: Path) -> None:
    result = load(engine, model_8_layers, split_mode="layer", tensor_split=[1.0, 1.0], experts_in_ram="all")
    assert bytes_on(result, gpus[0], "routed_experts") == bytes_on(result, gpus[1], "routed_experts") == 0
    assert bytes_on(result, gpus[0], "attention") > 0 and bytes_on(result, gpus[1], "attention") > 0


def free_after_chatting(engine: EngineClient) -> dict[str, int]:
    """Each device's free memory after a prompt long enough for the prefill path (the cache's
    warm-up takes it: its first-use allocations then count on both sides of a comparison) and
    a decode on the decoding path."""
    long = engine.chat(ChatParams(messages=[ChatMessage("user", "expert router layer " * 40)],
                                  sampling=Sampling(temperature=0.0, max_tokens=4, ignore_eos=True)))
    assert long.result.completion_tokens == 4
    assert gpu_testing.decode(engine)
    return {d.name: d.memory_free for d in engine.info().devices}


def test_a_static_cache_over_two_gpus_keeps_each_pack_on_its_layers_gpu_and_serves_hits(
        engine: EngineClient, gpus: list[str], realistic_q30: Path) -> None:
    info = read_model(realistic_q30)
    gpu_testing.load(engine, realistic_q30, **HALVES)
    plain = free_after_chatting(engine)
    loaded = gpu_testing.load(engine, realistic_q30, expert_cache="static", expert_cache_slots=32, **HALVES)
    cache = loaded.expert_cache
    assert cache is not None and cache.available, cache
    assert cache.layers == info.moe_layers and cache.slots == 32
    cached = free_after_chatting(engine)
    # the engine puts a layer's pack on its router's GPU, as the memory model counts it
    plan = PlacementPlan(n_ctx=1024, experts_in_ram="all", **HALVES)  # type: ignore[arg-type]
    where = expert_cache_pack_devices(info, plan, info.moe_layers, gpus[:2])
    assert set(where.values()) == set(gpus[:2])
    for gpu in gpus[:2]:
        packs = 32 * sum(info.expert_bytes([il]) for il, device in where.items() if device == gpu)
        taken = plain[gpu] - cached[gpu]
        assert 0.9 * packs <= taken <= packs + 128 * MiB, (gpu, taken, packs)
    routing = engine.routing()
    # a quarter of the experts, ranked by the warm-up, under routing like Qwen3's: as on one GPU
    assert routing.hit_rate is not None and routing.hit_rate > 0.35
    assert all(rate is not None and rate > 0.2 for rate in routing.layer_hit_rate)


def test_a_dynamic_cache_over_two_gpus_copies_beside_decoding_from_pinned_memory(
        engine: EngineClient, gpus: list[str], realistic_q30: Path) -> None:
    # patch 0004 has a copy stream per GPU with packs, each copy going to its layer's GPU
    loaded = gpu_testing.load(engine, realistic_q30, expert_cache="dynamic", expert_cache_slots=16,
                              use_mmap=False, **HALVES)
    assert loaded.expert_cache is not None and loaded.expert_cache.available
    assert loaded.expert_cache.copies_beside_decoding
    assert gpu_testing.decode(engine, tokens=32)
    stats = engine.stats().expert_cache
    assert stats is not None and stats.uploads > 16 * 4  # the initial set, then copies
