"""The KV cache of multi-head latent attention (DeepSeek-V3), read from a real GGUF header.

The synthetic writer makes qwen3moe and llama files only, so this test writes a DeepSeek-V3
shaped header with the ``gguf`` library (the same keys and tensor names llama.cpp's
converter writes) and leaves the tensor data a sparse hole: gguf_info reads headers only.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from app.advisor.memory import memory_by_device
from app.advisor.planner import plan_for
from app.engine.placement import PlacementPlan
from app.gguf.info import kv_bytes_per_layer, read_model
from app.hardware.model import Cpu, Gpu, Hardware, Memory
from app.synthetic import write_sparse_tensors

GiB = 1024**3
Q = gguf.GGMLQuantizationType
# DeepSeek-V3 / R1 (671B): 61 layers, the first 3 dense, 256 routed experts (top-8) + 1 shared
N_LAYER, N_DENSE, N_EMBD, N_HEAD, N_VOCAB = 61, 3, 7168, 128, 129280
N_EXPERT, N_FF_EXP, N_FF = 256, 2048, 18432
Q_LORA, KV_LORA, ROPE, NOPE, V_HEAD = 1536, 512, 64, 128, 128


def deepseek_v3_tensors() -> list[tuple[str, tuple[int, ...], Q]]:
    """(name, ggml shape with the row length first, type) as llama.cpp's converter writes them."""
    tensors = [("token_embd.weight", (N_EMBD, N_VOCAB), Q.Q4_0),
               ("output_norm.weight", (N_EMBD,), Q.F32), ("output.weight", (N_EMBD, N_VOCAB), Q.Q4_0)]
    for i in range(N_LAYER):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", (N_EMBD,), Q.F32),
            (b + "attn_q_a_norm.weight", (Q_LORA,), Q.F32),
            (b + "attn_kv_a_norm.weight", (KV_LORA,), Q.F32),
            (b + "attn_q_a.weight", (N_EMBD, Q_LORA), Q.Q4_0),
            (b + "attn_q_b.weight", (Q_LORA, N_HEAD * (NOPE + ROPE)), Q.Q4_0),
            (b + "attn_kv_a_mqa.weight", (N_EMBD, KV_LORA + ROPE), Q.Q4_0),
            (b + "attn_k_b.weight", (NOPE, KV_LORA, N_HEAD), Q.Q4_0),
            (b + "attn_v_b.weight", (KV_LORA, V_HEAD, N_HEAD), Q.Q4_0),
            (b + "attn_output.weight", (N_HEAD * V_HEAD, N_EMBD), Q.Q4_0),
            (b + "ffn_norm.weight", (N_EMBD,), Q.F32),
        ]
        if i < N_DENSE:
            tensors += [(b + "ffn_gate.weight", (N_EMBD, N_FF), Q.Q4_0),
                        (b + "ffn_up.weight", (N_EMBD, N_FF), Q.Q4_0),
                        (b + "ffn_down.weight", (N_FF, N_EMBD), Q.Q4_0)]
            continue
        tensors += [
            (b + "ffn_gate_inp.weight", (N_EMBD, N_EXPERT), Q.F32),
            (b + "exp_probs_b.bias", (N_EXPERT,), Q.F32),
            (b + "ffn_gate_exps.weight", (N_EMBD, N_FF_EXP, N_EXPERT), Q.Q4_0),
            (b + "ffn_up_exps.weight", (N_EMBD, N_FF_EXP, N_EXPERT), Q.Q4_0),
            (b + "ffn_down_exps.weight", (N_FF_EXP, N_EMBD, N_EXPERT), Q.Q4_0),
            (b + "ffn_gate_shexp.weight", (N_EMBD, N_FF_EXP), Q.Q4_0),
            (b + "ffn_up_shexp.weight", (N_EMBD, N_FF_EXP), Q.Q4_0),
            (b + "ffn_down_shexp.weight", (N_FF_EXP, N_EMBD), Q.Q4_0),
        ]
    return tensors


def nbytes(shape: tuple[int, ...], qtype: Q) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape[1:], dtype=np.int64)) * shape[0] // block * size


@pytest.fixture(scope="module")
def deepseek_v3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deepseek") / "DeepSeek-V3-Q4_0.gguf"
    writer = gguf.GGUFWriter(path, "deepseek2")
    writer.add_name("DeepSeek-V3 (header only)")
    writer.add_block_count(N_LAYER)
    writer.add_context_length(163840)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(1)  # MLA GGUFs: one latent "head" of 576 values
    writer.add_key_length(KV_LORA + ROPE)
    writer.add_value_length(KV_LORA)
    writer.add_uint32("deepseek2.attention.key_length_mla", NOPE + ROPE)
    writer.add_uint32("deepseek2.attention.value_length_mla", V_HEAD)
    writer.add_q_lora_rank(Q_LORA)
    writer.add_kv_lora_rank(KV_LORA)
    writer.add_rope_dimension_count(ROPE)
    writer.add_leading_dense_block_count(N_DENSE)
    writer.add_expert_count(N_EXPERT)
    writer.add_expert_used_count(8)
    writer.add_expert_shared_count(1)
    writer.add_expert_feed_forward_length(N_FF_EXP)
    writer.add_vocab_size(N_VOCAB)
    write_sparse_tensors(writer, [(name, shape, qtype, nbytes(shape, qtype))
                                  for name, shape, qtype in deepseek_v3_tensors()])
    return path


def test_mla_caches_one_latent_of_kv_lora_rank_plus_rope_values_per_token(deepseek_v3: Path) -> None:
    model = read_model(deepseek_v3)
    assert model.architecture == "deepseek2" and model.n_layer == 61
    # (512 + 64) f16 values per token and layer, no V cache: 1,152 bytes, not the
    # 128 heads x (192 + 128) x 2 = 81,920 bytes multi-head attention would cache
    assert kv_bytes_per_layer(model, 1) == 576 * 2
    assert kv_bytes_per_layer(model, 32768, "q8_0", "q8_0") == 32768 * 576 * 34 // 32
    (cpu,) = memory_by_device(model, PlacementPlan(n_ctx=32768), [])
    assert cpu.kv == 61 * 32768 * 576 * 2  # 2.30 GB for 32k tokens


def test_deepseek_v3_on_a_24_gb_gpu_keeps_its_experts_in_ram(deepseek_v3: Path) -> None:
    model = read_model(deepseek_v3)
    assert model.moe_layers == list(range(3, 61))
    gpu = Gpu("nvidia", "NVIDIA GeForce RTX 4090", 24 * GiB, 24 * GiB)
    machine = Hardware(Cpu("EPYC", "x86_64", 32, 64, ()), Memory(512 * GiB, 500 * GiB, 0), [], [gpu])
    plan = plan_for(model, machine, 32768)
    assert plan.verdict == "fits_with_expert_offload"
    assert plan.device("CUDA0").kv == 61 * 32768 * 576 * 2
    # 58 MoE layers of 3.8 GB of experts each: at most a few stay on a 24 GB GPU
    assert 55 <= plan.experts_in_ram_layers < 58
    assert plan.speed is not None and 1 < plan.speed.decode.low < plan.speed.decode.high < 100
