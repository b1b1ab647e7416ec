"""Expert offload on a real GPU: placement requested vs reported, hit rate, VRAM telemetry.

These need a GPU build of llama.cpp and a GPU (conftest skips them, saying why, elsewhere).
Run on the accelerator machine: ``pytest -m gpu``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan, TensorOverride
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.errors import OutOfMemoryError
from app.gguf.info import kv_bytes_per_layer, read_model
from app.synthetic import SyntheticSpec, write_synthetic_model
from app.tune.measure import Measurer, Workload

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_name(engine: EngineClient) -> str:
    return next(d.name for d in engine.info().devices if d.kind == "gpu")


@pytest.fixture(scope="module")
def real_shape_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen3-30B-A3B's real layer shapes, 4 layers (about 2.7 GB)."""
    folder = tmp_path_factory.mktemp("q30")
    (path,) = write_synthetic_model(folder / "q30-4l.gguf",
                                    SyntheticSpec.preset("qwen3-30b-a3b", n_layer=4))
    return path


def load(engine: EngineClient, model: Path, **plan: object) -> LoadResult:
    # one GPU (the main one) also on a machine with several, where llama.cpp would split the
    # layers over all of them (tests/test_gpu_multi.py covers that)
    placement = PlacementPlan(**{"n_ctx": 1024, "split_mode": "none", **plan})  # type: ignore[arg-type]
    return engine.load(LoadParams(model=str(model), placement=placement))


def bytes_on(result: LoadResult, tensor_class: str, device: str) -> int:
    return sum(p.bytes for p in result.placement
               if p.tensor_class == tensor_class and p.device == device)


def chat(engine: EngineClient) -> None:
    stream = engine.chat(ChatParams(
        messages=[ChatMessage(role="user", content="Route me through the experts")],
        sampling=Sampling(temperature=0.0, max_tokens=16, ignore_eos=True)))
    for _ in stream:
        pass


def test_first_layers_experts_in_ram_land_in_ram_and_the_rest_on_the_gpu(
        engine: EngineClient, gpu_name: str, real_shape_model: Path) -> None:
    model = read_model(real_shape_model)
    per_layer = model.bytes_by_class()["routed_experts"] // 4
    result = load(engine, real_shape_model, experts_in_ram=1)
    assert result.expert_layers_on_gpu == [1, 2, 3]
    assert bytes_on(result, "routed_experts", "CPU") == per_layer
    assert bytes_on(result, "routed_experts", gpu_name) == 3 * per_layer
    for cls in ("attention", "router", "norms"):
        assert bytes_on(result, cls, "CPU") == 0, cls
        assert bytes_on(result, cls, gpu_name) == model.bytes_by_class()[cls], cls

    chat(engine)
    snapshot = engine.routing()
    assert snapshot.layer_hit_rate == [0.0, 1.0, 1.0, 1.0]
    # uses served from VRAM: those of layers 1-3 (the last layer routes only output tokens)
    uses = [sum(row) for row in snapshot.counts]
    assert snapshot.hit_rate == pytest.approx(sum(uses[1:]) / sum(uses))
    assert 0.5 < snapshot.hit_rate < 0.75


def test_pinned_host_buffers_count_as_cpu_memory(gpu_name: str) -> None:
    from app.engine import ggml_backend
    from app.engine.runtime import device_of_buffer_type

    pinned = {name for name in ggml_backend.host_buffer_types() if name.endswith("_Host")}
    assert pinned  # CUDA_Host on a CUDA build
    for name in pinned:
        assert device_of_buffer_type(name, {"CPU", gpu_name}) == "CPU"


@pytest.mark.parametrize(("experts_in_ram", "hit_rate"), [("all", 0.0), ("none", 1.0)])
def test_hit_rate_follows_where_experts_are(engine: EngineClient, real_shape_model: Path,
                                            experts_in_ram: str, hit_rate: float) -> None:
    load(engine, real_shape_model, experts_in_ram=experts_in_ram)
    chat(engine)
    assert engine.routing().hit_rate == hit_rate


def test_explicit_rule_sends_one_layer_to_ram(engine: EngineClient, gpu_name: str,
                                              real_shape_model: Path) -> None:
    result = load(engine, real_shape_model,
                  overrides=[TensorOverride(pattern=r"^blk\.2\.ffn_(up|gate|down)_exps", device="CPU")])
    assert result.expert_layers_on_gpu == [0, 1, 3]


def test_vram_telemetry_sees_the_model_arrive(engine: EngineClient, gpu_name: str,
                                              real_shape_model: Path) -> None:
    engine.unload()
    before = next(m for m in engine.stats().memory if m.device == gpu_name)
    result = load(engine, real_shape_model, experts_in_ram="none")
    after = next(m for m in engine.stats().memory if m.device == gpu_name)
    on_gpu = sum(p.bytes for p in result.placement if p.device == gpu_name)
    assert after.total == before.total > on_gpu
    assert after.used - before.used >= on_gpu  # weights, plus KV cache and compute buffers


def test_a_kv_cache_that_fits_ram_and_vram_together_but_not_the_gpu_is_out_of_memory(
        engine: EngineClient, gpu_name: str, real_shape_model: Path) -> None:
    # The engine's own pre-flight check passes (RAM + VRAM could hold it), so this is
    # llama.cpp's real CUDA allocation failing: the engine must say so and stay up.
    gpu = next(d for d in engine.info().devices if d.name == gpu_name)
    info = read_model(real_shape_model)
    per_token = info.n_layer * kv_bytes_per_layer(info, 1, "f16", "f16")
    n_ctx = (int(gpu.memory_total * 1.25 / per_token) // 256 + 1) * 256
    assert n_ctx * per_token < sum(d.memory_total for d in engine.info().devices)
    with pytest.raises(OutOfMemoryError) as failure:
        engine.load(LoadParams(model=str(real_shape_model),
                               placement=PlacementPlan(n_ctx=n_ctx, split_mode="none")))
    assert "memory" in str(failure.value).lower()
    load(engine, real_shape_model, experts_in_ram="all")
    chat(engine)  # the engine is still serving


def test_a_measurement_over_the_vram_budget_is_marked_and_not_run(engine: EngineClient,
                                                                  real_shape_model: Path) -> None:
    # all on the GPU takes about 1.9 GB, with every routed expert in RAM about 0.55 GB
    measurer = Measurer(engine, real_shape_model, gpu_budget=int(1.2e9))
    over = measurer.measure("all on GPU", PlacementPlan(n_ctx=1024), Workload((64,), 8))
    assert not over.fits and over.gpu_bytes > 1.2e9 and over.decode_tps == 0
    inside = measurer.measure("experts in RAM", PlacementPlan(n_ctx=1024, experts_in_ram="all"),
                              Workload((64,), 8))
    assert inside.ok and 0 < inside.gpu_bytes < 1.2e9 and inside.decode_tps > 0


def test_four_chats_decode_together_on_the_gpu_with_experts_in_ram(engine: EngineClient,
                                                                  real_shape_model: Path) -> None:
    # CUDA kernels see a batch of 4 sequences, the routed experts are computed on the CPU for
    # all of them at once: every chat must still get all its tokens, with routing counted
    engine.load(LoadParams(model=str(real_shape_model), placement=PlacementPlan(
        n_ctx=1024, experts_in_ram="all", n_parallel=4)))
    before = engine.routing().tokens
    streams = [engine.chat(ChatParams(messages=[ChatMessage("user", f"question {i}")],
                                      sampling=Sampling(temperature=0.0, max_tokens=48, ignore_eos=True)))
               for i in range(4)]
    results = [stream.result for stream in streams]
    assert [r.completion_tokens for r in results] == [48] * 4
    evaluated = sum(r.prompt_tokens - r.cached_tokens + r.completion_tokens - 1 for r in results)
    assert engine.routing().tokens - before == evaluated
    assert engine.stats().n_parallel == 4


@pytest.mark.parametrize("experts_in_ram", ["none", "all"])
def test_routing_counts_on_the_gpu_are_exact_and_leave_the_answer_alone(
        engine: EngineClient, real_shape_model: Path, experts_in_ram: str) -> None:
    # Decoding, the router's argsort writes its ids straight into the routing buffer on the
    # GPU (CUDA's fused top-k MoE kernel); prompts copy them. Both must count each token's
    # 8 distinct experts in every layer, and change nothing the model computes.
    def answer(telemetry: bool) -> str:
        engine.load(LoadParams(model=str(real_shape_model), telemetry=telemetry,
                               placement=PlacementPlan(n_ctx=1024, experts_in_ram=experts_in_ram)))
        stream = engine.chat(ChatParams(
            messages=[ChatMessage(role="user", content="Count the experts of every layer")],
            sampling=Sampling(temperature=0.0, max_tokens=24, ignore_eos=True)))
        text = "".join(token.text for token in stream)
        result = stream.result
        if telemetry:
            snapshot = engine.routing()
            evaluated = result.prompt_tokens + result.completion_tokens - 1
            assert snapshot.tokens == evaluated
            sampled = result.completion_tokens  # the last layer runs for these only
            assert [sum(row) for row in snapshot.counts] == [evaluated * 8] * 3 + [sampled * 8]
            # distinct experts per token: no expert more often than tokens were routed (ids
            # never written would read as expert 0, 8 times a token)
            assert all(max(row) <= evaluated for row in snapshot.counts)
        return text

    assert answer(telemetry=True) == answer(telemetry=False)
