"""Every model family the README names, end to end on this machine's CPU: DeepSeek-V3 and
Kimi-K2 (llama.cpp's ``deepseek2``: multi-head latent attention, shared expert, dense leading
layers, sigmoid gating with a selection bias), GLM-4.5 (``glm4moe``, with its skipped
multi-token-prediction block) and gpt-oss (MXFP4 experts with biases, attention sinks,
sliding-window layers), next to Qwen3 and Mixtral.

Tiny versions load, chat through the family's own chat template and count their routing; the
memory model is held to what llama.cpp allocates for each family at real widths (few layers,
few experts: a layer's compute buffer and KV cache do not depend on the expert count).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.advisor.gpu_specs import gpu_spec
from app.advisor.memory import memory_by_device
from app.advisor.speed import predict
from app.engine.client import EngineClient
from app.engine.placement import CPU_DEVICE, PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, ChatResult, LoadParams, Sampling
from app.gguf.info import GGUFModel, kv_bytes, kv_bytes_per_layer, read_model
from app.synthetic import SyntheticSpec, write_synthetic_header, write_synthetic_model
from tests.memory_testing import modelled_and_real
from tests.test_advisor_gpus import H100
from tests.test_speed_model import SERVER_RAM

FAMILIES = ["tiny-deepseek-v3", "tiny-kimi-k2", "tiny-glm-4.5", "tiny-gpt-oss"]
# the text each family's template writes around a user turn (its special tokens)
USER_MARKERS = {
    "tiny-deepseek-v3": "<｜User｜>",
    "tiny-kimi-k2": "<|im_user|>",
    "tiny-glm-4.5": "<|user|>",
    "tiny-gpt-oss": "<|start|>user<|message|>",
}



@pytest.fixture(scope="module")
def family_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("families")
    return {name: write_synthetic_model(folder / f"{name}.gguf", SyntheticSpec.preset(name))[0]
            for name in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_chats_and_counts_its_routing(
        engine: EngineClient, family_files: dict[str, Path], family: str) -> None:
    spec = SyntheticSpec.preset(family)
    model = read_model(family_files[family])
    assert model.chat_template is not None and USER_MARKERS[family] in model.chat_template
    result = engine.load(LoadParams(model=str(family_files[family]),
                                    placement=PlacementPlan(n_ctx=1024, n_threads=2)))
    assert result.model.architecture == spec.arch
    moe_layers = list(range(spec.n_dense_lead, spec.n_layer))  # GLM's MTP block is not run
    assert model.moe_layers == moe_layers

    stream = engine.chat(ChatParams(
        messages=[ChatMessage(role="system", content="You are terse."),
                  ChatMessage(role="user", content="Which experts answer this?")],
        sampling=Sampling(temperature=0.0, max_tokens=12, ignore_eos=True)))
    text = "".join(token.text for token in stream)
    answer = stream.result
    assert answer.completion_tokens == 12 and answer.finish_reason == "length"
    assert text == answer.text

    routing = engine.routing()
    assert routing.layers == moe_layers and routing.n_expert == spec.n_expert
    evaluated = answer.prompt_tokens + answer.completion_tokens - 1
    # every MoE layer routes every evaluated token to k experts, but llama.cpp runs the last
    # layer only for the token whose logits it needs (gpt-oss's graph runs it for all)
    last = evaluated if spec.arch == "gpt-oss" else answer.completion_tokens
    expected = [evaluated] * (len(moe_layers) - 1) + [last]
    assert [sum(row) for row in routing.counts] == [n * spec.n_expert_used for n in expected]


@pytest.mark.parametrize("family", FAMILIES)
def test_experts_in_ram_moves_the_routed_experts_and_nothing_else(
        family_files: dict[str, Path], family: str) -> None:
    """llama.cpp's best placement for MoE models (``--n-cpu-moe``), by the engine's tensor
    overrides: routed experts (with gpt-oss's biases) in RAM; the shared expert, the router and
    its selection bias, attention and the dense layers on the GPU."""
    model = read_model(family_files[family])
    plan = PlacementPlan(n_gpu_layers=-1, experts_in_ram="all")
    cpu, gpu = memory_by_device(model, plan, ["CUDA0"])
    routed = sum(t.n_bytes for t in model.loaded_tensors if t.tensor_class == "routed_experts")
    embeddings = sum(t.n_bytes for t in model.tensors if t.name == "token_embd.weight")
    assert cpu.device == CPU_DEVICE and cpu.weights == routed + embeddings
    assert gpu.weights == sum(t.n_bytes for t in model.loaded_tensors) - cpu.weights
    shared = [t for t in model.loaded_tensors if t.tensor_class == "shared_experts"]
    assert bool(shared) == (family != "tiny-gpt-oss")


# Real widths, few layers and experts: (spec, tolerance of the compute buffer)
SHAPES = {
    "deepseek-v3": SyntheticSpec.preset("deepseek-v3", n_layer=2, n_dense_lead=1, n_expert=16,
                                        n_vocab=8192),  # 8 groups of 2
    "glm-4.5": SyntheticSpec.preset("glm-4.5", n_layer=2, n_dense_lead=1, n_expert=8, n_vocab=8192),
    "gpt-oss-120b": SyntheticSpec.preset("gpt-oss-120b", n_layer=2, n_expert=8, n_vocab=8192),
}


@pytest.fixture(scope="module")
def shape_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("family_shapes")
    return {name: write_synthetic_model(folder / f"{name}.gguf", spec)[0]
            for name, spec in SHAPES.items()}


@pytest.mark.parametrize("n_ctx", [512, 4096])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_memory_model_matches_llama_cpp_for_each_family(
        engine: EngineClient, shape_files: dict[str, Path], shape: str, n_ctx: int) -> None:
    """Within 3% on the CPU. MLA's KV cache is its latent, GLM's MTP block is neither loaded
    nor cached, gpt-oss's sliding-window layers cache their window and a ubatch."""
    cpu, real = modelled_and_real(engine, shape_files[shape], n_ctx)
    assert cpu.kv == pytest.approx(real["kv_cache"], rel=0.01)
    assert cpu.weights == pytest.approx(real["weights"], rel=0.03)
    # the log rounds to 0.01 MiB: allow that besides the relative error
    assert abs(cpu.compute - real["compute"]) <= 0.03 * real["compute"] + 0.01 * 2**20


def full_shape(tmp_path: Path, preset: str, **fields: object) -> GGUFModel:
    """The preset's real header (every layer, every expert) over a sparse hole: what the
    advisor reads of the real file, a few MB on disk."""
    spec = SyntheticSpec.preset(preset, **fields)
    return read_model(write_synthetic_header(tmp_path / f"{spec.name}-{len(fields)}.gguf", spec))


def test_the_mtp_block_is_neither_memory_nor_read_per_token(tmp_path: Path) -> None:
    with_mtp, without = full_shape(tmp_path, "glm-4.5"), full_shape(tmp_path, "glm-4.5", n_nextn=0)
    assert with_mtp.n_layer == 93 and with_mtp.n_trunk_layers == 92 and without.n_layer == 92
    assert with_mtp.layers_text == "92 layers (3 dense; +1 multi-token-prediction block, not loaded)"
    plan = PlacementPlan(n_ctx=8192, n_gpu_layers=-1, experts_in_ram="all")
    assert [(d.weights, d.kv) for d in memory_by_device(with_mtp, plan, ["CUDA0"])] == \
        [(d.weights, d.kv) for d in memory_by_device(without, plan, ["CUDA0"])]
    gpus = {"CUDA0": H100}
    assert predict(with_mtp, plan, gpus, SERVER_RAM, 16).decode_bytes == \
        predict(without, plan, gpus, SERVER_RAM, 16).decode_bytes


def test_sliding_window_layers_read_only_their_window(tmp_path: Path) -> None:
    model = full_shape(tmp_path, "gpt-oss-120b")
    plan = PlacementPlan(n_ctx=65536, n_gpu_layers=-1)
    short, long = (predict(model, plan, {"CUDA0": H100}, SERVER_RAM, 16, n_prompt=n, n_gen=2)
                   for n in (1000, 32000))
    # position 1001 vs 32001: the 18 full-attention layers read 31000 more cells, the 18
    # sliding-window layers their last 128 either way
    grown = long.decode_bytes["CUDA0"] - short.decode_bytes["CUDA0"]
    assert grown == 18 * (kv_bytes_per_layer(model, 32001) - kv_bytes_per_layer(model, 1001))


def test_mla_decode_attention_is_bound_by_compute(tmp_path: Path) -> None:
    """All 128 heads of DeepSeek-V3 attend over one latent of 576 + 512 values a cell: at long
    context a decoded token costs far more compute than its cache's bytes."""
    model = full_shape(tmp_path, "deepseek-v3")
    plan = PlacementPlan(n_ctx=65536, n_gpu_layers=-1)
    short, long = (predict(model, plan, {"CUDA0": H100}, SERVER_RAM, 16, n_prompt=n, n_gen=2)
                   for n in (1000, 32000))
    gpu = gpu_spec(H100, "CUDA0")
    kv_seconds = (long.decode_bytes["CUDA0"] - short.decode_bytes["CUDA0"]) / (gpu.bandwidth * 0.80)
    compute_seconds = 61 * 2 * 128 * (576 + 512) * 31000 / (gpu.flops * 0.20)
    slower = 1 / long.decode.high - 1 / short.decode.high  # the optimistic end's efficiencies
    assert slower == pytest.approx(kv_seconds + compute_seconds, rel=0.01)
    assert compute_seconds > 2 * kv_seconds


def test_sliding_window_layers_cache_their_window_and_chats_go_back_safely(
        engine: EngineClient, family_files: dict[str, Path]) -> None:
    """gpt-oss's sliding-window layers keep only their window (plus a ubatch) of cells, as
    llama-server's do: a follow-up turn reuses the cache; a chat that goes back further than
    the window (an earlier turn asked again) is prefilled from the start, never run with the
    window's cells missing."""
    model = read_model(family_files["tiny-gpt-oss"])
    plan = PlacementPlan(n_ctx=2048, n_threads=2, n_ubatch=32, n_batch=32)
    result = engine.load(LoadParams(model=str(family_files["tiny-gpt-oss"]), placement=plan))
    kv = sum(a.bytes for a in result.allocations if a.kind == "kv_cache")
    assert kv == pytest.approx(kv_bytes(model, 2048, n_ubatch=32), rel=0.01)  # the log: 0.01 MiB
    assert kv < 0.6 * model.n_trunk_layers * kv_bytes_per_layer(model, 2048)  # 2 of 4 layers: 256 cells

    def ask(messages: list[ChatMessage]) -> ChatResult:
        stream = engine.chat(ChatParams(messages=messages, sampling=Sampling(
            temperature=0.0, max_tokens=8, ignore_eos=True)))
        for _ in stream:
            pass
        return stream.result

    long_question = "Tell me about experts. " + "The router picks a few experts. " * 20
    first = ask([ChatMessage("user", long_question)])
    assert first.prompt_tokens > 400  # far more than the 256 cells of the sliding window layers
    follow_up = ask([ChatMessage("user", long_question), ChatMessage("assistant", first.text),
                     ChatMessage("user", "And then?")])
    assert follow_up.cached_tokens > first.prompt_tokens - 20
    # another first question: shares only the system prompt, whose window cells are gone
    other = ask([ChatMessage("user", "Something else entirely. " + long_question)])
    assert other.cached_tokens == 0
