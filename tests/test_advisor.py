"""The fit advisor: exact placements for real model shapes on machines a user may have."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.advisor.memory import VRAM_HEADROOM, layer_devices, memory_by_device
from app.advisor.planner import max_context, plan_for
from app.advisor.report import plan_lines
from app.engine.placement import PlacementPlan, TensorOverride
from app.gguf.info import GGUFModel, TensorEntry, kv_bytes_per_layer
from app.hardware.model import Cpu, Gpu, Hardware, Memory
from app.synthetic import SyntheticSpec, tensor_plan

GiB = 1024**3


def model_from_spec(spec: SyntheticSpec) -> GGUFModel:
    """The GGUFModel gguf_info would read from the synthetic file, without writing it."""
    keys = {"block_count": spec.n_layer, "embedding_length": spec.n_embd,
            "attention.head_count": spec.n_head, "attention.head_count_kv": spec.n_head_kv,
            "attention.key_length": spec.head_dim, "attention.value_length": spec.head_dim,
            "expert_count": spec.n_expert, "expert_used_count": spec.n_expert_used,
            "context_length": spec.n_ctx_train, "expert_feed_forward_length": spec.n_ff_exp}
    metadata: dict[str, object] = {"general.architecture": spec.arch,
                                   "tokenizer.ggml.tokens": spec.n_vocab}
    metadata.update({f"{spec.arch}.{key}": value for key, value in keys.items()})
    tensors = [TensorEntry(t.name, list(t.shape), t.qtype.name, t.nbytes, 0) for t in tensor_plan(spec)]
    return GGUFModel(shards=[Path(f"{spec.name}.gguf")], metadata=metadata, tensors=tensors)


def machine(vram_gib: float | None, ram_gib: float = 64) -> Hardware:
    gpus = [] if vram_gib is None else [Gpu("nvidia", "RTX", int(vram_gib * GiB), int(vram_gib * GiB))]
    ram = int(ram_gib * GiB)
    return Hardware(cpu=Cpu("CPU", "x86_64", 8, 16, ()), memory=Memory(ram, ram, 0), numa_nodes=[], gpus=gpus)


QWEN3_30B_Q8 = model_from_spec(SyntheticSpec.preset("qwen3-30b-a3b", quant="Q8_0"))  # 31.8 GB
QWEN3_30B_Q4 = model_from_spec(SyntheticSpec.preset("qwen3-30b-a3b"))  # 17.7 GB


def test_a_24_gb_gpu_keeps_the_routed_experts_of_the_first_18_layers_in_ram() -> None:
    # By hand, Qwen3-30B-A3B in Q8_0 (34 bytes per 32 weights) at 32,768 tokens:
    #   experts per layer: 3 x 2048 x 768 x 128 x 34/32         = 0.642 GB
    #   attention: 48 x (2048x4096 x2 + 2048x512 x2) x 34/32     = 0.963 GB
    #   routers (f32) 0.050 GB, output (Q8_0) 0.331 GB, norms 0.0004 GB
    #   KV: 32768 x 48 layers x 4 heads x (128+128) x 2 bytes    = 3.221 GB
    #   compute: logits 4 x 512 x (151936 + 2 x 2048)           = 0.320 GB
    #   dense total 4.885 GB; budget 24 GiB - 1 GiB = 24.696 GB -> 19.81 GB for experts
    #   -> 30 layers of experts (19.25 GB) on the GPU, those of the first 18 in RAM
    plan = plan_for(QWEN3_30B_Q8, machine(24), 32768)
    assert plan.verdict == "fits_with_expert_offload"
    assert plan.experts_in_ram_layers == 18
    assert plan.placement.experts_in_ram == 18 and plan.placement.n_gpu_layers == -1
    assert "routed experts of 18 of 48 layers in RAM (10.8 GiB)" in plan.reasons
    gpu = plan.device("CUDA0")
    assert gpu.total <= 23 * GiB
    assert gpu.kv == 32768 * 48 * 4 * 256 * 2
    # one layer less in RAM would not fit
    one_less = memory_by_device(QWEN3_30B_Q8, PlacementPlan(n_ctx=32768, experts_in_ram=17), ["CUDA0"])
    assert one_less[1].total > 23 * GiB
    assert plan.device("CPU").weights == 622329856 + 18 * 3 * 2048 * 768 * 128 * 34 // 32


def test_an_80_gb_gpu_holds_the_whole_model() -> None:
    plan = plan_for(QWEN3_30B_Q8, machine(80), 40960)
    assert plan.verdict == "fits_on_gpu"
    assert plan.placement.experts_in_ram == "none"
    assert plan.device("CPU").weights == 151936 * 2048 * 2  # token_embd stays on the CPU


def test_a_12_gb_gpu_keeps_most_experts_in_ram() -> None:
    plan = plan_for(QWEN3_30B_Q4, machine(12), 8192)
    # Q4_0 experts 0.340 GB per layer; attention 0.510 + routers 0.050 + output 0.175 GB,
    # KV 0.805 + compute 0.320 GB: 1.861 GB; budget 11 GiB = 11.811 GB -> 9.95 GB / 0.340
    # = 29 layers of experts on the GPU, 19 in RAM
    assert plan.verdict == "fits_with_expert_offload"
    assert plan.experts_in_ram_layers == 19


def test_a_machine_without_a_gpu_runs_everything_from_ram() -> None:
    plan = plan_for(QWEN3_30B_Q4, machine(None), 8192)
    assert plan.verdict == "fits_in_ram"
    assert [m.device for m in plan.memory] == ["CPU"]
    assert plan.device("CPU").weights == QWEN3_30B_Q4.size_bytes
    assert plan.reasons[0] == "no usable GPU: every layer runs from RAM"


def test_too_little_ram_streams_the_experts_from_the_ssd() -> None:
    plan = plan_for(QWEN3_30B_Q8, machine(8, ram_gib=16), 8192)
    assert plan.verdict == "fits_streaming_from_ssd"
    assert plan.warnings and "SSD" in plan.warnings[0]
    # the experts in RAM stream through the engine's RAM cache: they stay in the mapped file
    assert plan.placement.expert_stream == "cache" and plan.placement.repack is False


def test_without_a_gpu_streaming_from_the_ssd_turns_repacking_off() -> None:
    plan = plan_for(QWEN3_30B_Q8, machine(None, ram_gib=16), 8192)
    assert plan.verdict == "fits_streaming_from_ssd"
    # repacked copies of the weights would need the RAM that is missing
    assert plan.placement.repack is False and "--no-repack" in plan.warnings[1]
    assert ", weights not repacked" in plan_lines(QWEN3_30B_Q8, plan)[-1]
    fits = plan_for(QWEN3_30B_Q8, machine(None, ram_gib=64), 8192)
    assert fits.placement.repack is True and "repacked" not in plan_lines(QWEN3_30B_Q8, fits)[-1]


def test_a_tiny_gpu_that_cannot_hold_even_attention_does_not_fit() -> None:
    plan = plan_for(QWEN3_30B_Q8, machine(1.5), 32768)
    assert plan.verdict == "does_not_fit"
    assert "even with every routed expert in RAM" in plan.reasons[0]


def test_the_largest_context_that_fits_is_found() -> None:
    hardware = machine(12)
    n_ctx = max_context(QWEN3_30B_Q8, hardware)
    assert plan_for(QWEN3_30B_Q8, hardware, n_ctx).verdict == "fits_with_expert_offload"
    assert n_ctx == QWEN3_30B_Q8.n_ctx_train  # with experts in RAM even 40,960 tokens fit
    small = machine(2.75)  # 2.5 GB no longer: the GPU stages a 0.2 GB Q8_0 expert tensor for prompts
    n_ctx = max_context(QWEN3_30B_Q8, small)
    assert 0 < n_ctx < 40960
    assert plan_for(QWEN3_30B_Q8, small, n_ctx + 256).verdict == "does_not_fit"


def test_n_gpu_layers_counts_the_output_layer_first() -> None:
    # llama.cpp: of n_layer + 1 layers the last n_gpu_layers are offloaded, output first
    assert layer_devices(PlacementPlan(n_gpu_layers=1), 4, ["CUDA0"]) == ["CPU"] * 4 + ["CUDA0"]
    assert layer_devices(PlacementPlan(n_gpu_layers=3), 4, ["CUDA0"]) == ["CPU"] * 2 + ["CUDA0"] * 3
    assert layer_devices(PlacementPlan(n_gpu_layers=0), 4, ["CUDA0"]) == ["CPU"] * 5


def test_overrides_win_over_layers_and_kv_follows_its_layer() -> None:
    model = model_from_spec(SyntheticSpec.preset("tiny"))
    plan = PlacementPlan(n_gpu_layers=3, n_ctx=1024,
                         overrides=[TensorOverride(r"^output\.", "CPU")])
    cpu, gpu = memory_by_device(model, plan, ["CUDA0"])
    per_layer = kv_bytes_per_layer(model, 1024)
    assert per_layer == 1024 * 2 * (32 + 32) * 2
    assert (cpu.kv, gpu.kv) == (2 * per_layer, 2 * per_layer)
    assert gpu.weights == sum(t.n_bytes for t in model.tensors
                              if t.layer in (2, 3) or t.name == "output_norm.weight")
    # the largest matrix in RAM (layers 0-1, the output head) is copied in for prompt batches
    staged = max(t.n_bytes for t in model.tensors if len(t.shape) >= 2 and (
        t.layer in (0, 1) or t.name == "output.weight"))
    assert gpu.compute > staged


def test_headroom_is_kept_free_on_the_gpu() -> None:
    plan = plan_for(QWEN3_30B_Q4, machine(24), 4096)
    assert plan.device("CUDA0").total <= 24 * GiB - VRAM_HEADROOM


@pytest.mark.parametrize("type_k, type_v, ratio",
                         [("q8_0", "q8_0", 34 / 64), ("f16", "q4_0", (2 + 18 / 32) / 4)])
def test_quantized_kv_cache_is_smaller(type_k: str, type_v: str, ratio: float) -> None:
    f16 = kv_bytes_per_layer(QWEN3_30B_Q4, 4096)
    assert kv_bytes_per_layer(QWEN3_30B_Q4, 4096, type_k, type_v) == pytest.approx(f16 * ratio)


@pytest.mark.parametrize(("plan", "low", "high"), [
    (PlacementPlan(n_ctx=12288, experts_in_ram=14), 0.59e9, 0.65e9),  # H100: 0.59 GB
    (PlacementPlan(n_ctx=12288, n_gpu_layers=8), 0.59e9, 0.65e9),     # H100: 0.62 GB
    (PlacementPlan(n_ctx=12288, experts_in_ram="none"), 0.39e9, 0.42e9),  # CUDA stand-in: 0.404 GB
    (PlacementPlan(n_ctx=12288, experts_in_ram=14, op_offload=False), 0.39e9, 0.42e9),  # 0.404 GB
])
def test_the_gpu_compute_buffer_holds_one_staged_host_weight_with_op_offload(
        plan: PlacementPlan, low: float, high: float) -> None:
    # llama.cpp's allocations seen on the H100 with the Qwen3-235B-A22B shape (20 layers):
    # a matmul whose weight is in RAM runs on the GPU for a prompt batch, its weight (one
    # layer's ffn_*_exps, 0.45 GB) copied into the compute buffer
    model = model_from_spec(SyntheticSpec.preset("qwen3-235b-a22b", n_layer=20))
    gpu = next(m for m in memory_by_device(model, plan, ["CUDA0"]) if m.device == "CUDA0")
    assert low <= gpu.compute <= high
