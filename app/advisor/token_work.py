"""A decoded token's work for the speed model: the bytes it reads and the FLOPs it computes on
each device, its graph nodes and hops between devices, and the fixed latencies those cost.
Decode (app/advisor/speed.py) and prefill (app/advisor/prefill.py) both count them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from app.advisor.device_rates import Range
from app.advisor.memory import is_mla, layer_devices, tensor_device
from app.engine.placement import CPU_DEVICE, PlacementPlan, tensor_overrides
from app.gguf.info import GGUFModel, attention_shape, kv_bytes_per_layer, sliding_window_layers

# Fixed latency per graph node and token: a small GPU kernel costs 2-3 us of launch and tail,
# a CPU op 1.5-3 us of thread-pool barrier. A layer has ~13 nodes of attention (norm, Q/K/V,
# Q/K norms, RoPE, cache writes, attention, output, residual), ~7 of routing (norm, router,
# softmax, top-k, weights) and ~8 of routed experts (3 matmuls, GLU, weighting, sum).
GPU_NODE_S: Range = (2.3e-6, 1.5e-6)
CPU_NODE_S: Range = (3e-6, 1.5e-6)
STAGE_NODES = (13, 7, 8)  # attention, dense FFN and routing, routed experts
# Graph nodes of one MoE layer in llama.cpp, by architecture (its "graph: nodes = N" log line,
# per layer, counted on the CPU): STAGE_NODES were fitted on qwen3moe; CPU stages scale with these.
# MLA's projections and concatenations, GLM's biases and sigmoid gating, gpt-oss's biases and
# sinks make their layers longer.
LAYER_NODES = {"qwen3moe": 56, "llama": 52, "deepseek2": 74, "glm4moe": 70, "gpt-oss": 61}
GROUP_ROUTING_NODES = 14  # DeepSeek-V3's group-limited routing (8 groups, the best 4): 74 -> 88
# A layer's fixed cost on a GPU against qwen3moe's, by architecture, measured on the H200 (issue
# 19's family table, docs/benchmarks.md): CUDA's kernels for MLA (128 heads over a 576-wide
# latent, batched k_b/v_b products) and for gpt-oss (MXFP4, biases, sinks) cost more per layer
# than their graph's node count says.
GPU_LAYER_COST = {"qwen3moe": 1.0, "deepseek2": 2.6, "gpt-oss": 2.0, "glm4moe": 1.45}
# A hop between devices: a small copy plus a stream synchronisation.
HOP_S: Range = (40e-6, 15e-6)
# Per token outside the graph: building or reusing it, sampling, the engine's loop and its
# socket; per request: the chat template, tokenisation, the first sample.
TOKEN_S: Range = (300e-6, 100e-6)
# With a GPU: the step's launch, the logits' copy back and the stream's synchronisation, per
# token (fitted with GPU_NODE_S on the H200: Qwen3-30B's 48 layers and Qwen3-235B's 8 at once).
GPU_TOKEN_S: Range = (700e-6, 450e-6)
REQUEST_S: Range = (3e-3, 1e-3)


@dataclass
class TokenWork:
    bytes: dict[str, float]  # bytes read per token, per device
    nodes: dict[str, int]  # graph nodes per device, per token (fixed latency each)
    hops: int  # device changes per token
    weights: dict[str, float]  # all weight bytes, per device (a prefill ubatch reads them all)
    flops: dict[str, float]  # FLOPs per prompt token, per device (prefill)
    expert_flops: dict[str, float]  # of which routed experts (their own efficiency)
    # FLOPs of one decoded token's attention over the cache, per device (MLA: compute bound)
    attention_flops: dict[str, float] = field(default_factory=dict)
    # the CPU's weight bytes a token by type (its kernels' speed depends on it: DeviceRates.kernel_speed)
    cpu_type_bytes: dict[str, float] = field(default_factory=dict)
    cpu_expert_bytes: float = 0.0  # of the CPU's bytes a token, its routed experts'
    ram_experts: list[int] = field(default_factory=list)  # bytes of RAM experts, per MoE layer


def token_work(model: GGUFModel, plan: PlacementPlan, gpus: list[str], position: int) -> TokenWork:
    """The work of a token decoded at ``position`` (the cells its attention reads) under ``plan``."""
    n_layer = model.n_layer
    devices = layer_devices(plan, n_layer, gpus)
    rules = tensor_overrides(plan, n_layer) if gpus else []
    k = plan.n_expert_used or model.n_expert_used or 1
    share = k / model.n_expert if model.n_expert else 1.0
    work = TokenWork({}, {}, 0, {}, {}, {})
    # per layer: the device of its attention, of its dense FFN part, of its routed experts
    path: dict[tuple[int, int], str] = {}
    ram_experts: dict[int, float] = {}
    for t in model.loaded_tensors:
        device = tensor_device(t.name, t.layer, devices, rules) if gpus else CPU_DEVICE
        cls = t.tensor_class
        n_bytes: float = t.n_bytes
        flops = 2.0 * math.prod(t.shape) if len(t.shape) >= 2 else 0.0
        if cls == "routed_experts":
            n_bytes *= share
            flops *= share
            work.expert_flops[device] = work.expert_flops.get(device, 0.0) + flops
            if device == CPU_DEVICE:
                work.cpu_expert_bytes += n_bytes
                if t.layer is not None:
                    ram_experts[t.layer] = ram_experts.get(t.layer, 0.0) + t.n_bytes
        elif cls == "embeddings":
            n_bytes /= max(t.shape[-1], 1)  # one row per token (shape: n_embd, n_vocab)
            flops = 0.0
        elif cls == "output":
            flops = 0.0  # logits of the prompt's last token only
        work.bytes[device] = work.bytes.get(device, 0.0) + n_bytes
        if device == CPU_DEVICE:
            work.cpu_type_bytes[t.type_name] = work.cpu_type_bytes.get(t.type_name, 0.0) + n_bytes
        work.weights[device] = work.weights.get(device, 0.0) + t.n_bytes
        work.flops[device] = work.flops.get(device, 0.0) + flops
        if t.layer is not None:
            stage = 2 if cls == "routed_experts" else 0 if cls in ("attention", "norms") else 1
            path.setdefault((t.layer, stage), device)
    a = attention_shape(model)
    mla = is_mla(model)
    window, sliding = model.arch_int("attention.sliding_window"), sliding_window_layers(model)
    for layer in range(model.n_trunk_layers):
        # a sliding-window layer (gpt-oss: every other one) attends to the last ``window`` cells
        cells = min(position, window) if layer in sliding else position
        device = devices[layer]
        work.bytes[device] = work.bytes.get(device, 0.0) + kv_bytes_per_layer(
            model, cells, plan.type_k, plan.type_v)
        # QK and PV of every head over the cells (prefill: over half the prompt on average)
        flops = 2.0 * a.n_head * (a.key_length + a.value_length) * cells
        work.flops[device] = work.flops.get(device, 0.0) + flops / 2
        if mla:
            # every head reads the one latent (key_length = kv_lora_rank + rope, value_length
            # = kv_lora_rank): a decoded token's attention is bound by compute, not by the
            # cache's bytes as grouped-query attention's is (counted above)
            work.attention_flops[device] = work.attention_flops.get(device, 0.0) + flops
    nodes = LAYER_NODES.get(model.architecture, LAYER_NODES["qwen3moe"])
    if model.arch_int("expert_group_count") > 1:
        nodes += GROUP_ROUTING_NODES
    cpu_scale = nodes / LAYER_NODES["qwen3moe"]
    gpu_scale = GPU_LAYER_COST.get(model.architecture, cpu_scale)
    for (_, stage), device in path.items():
        scale = cpu_scale if device == CPU_DEVICE else gpu_scale
        work.nodes[device] = work.nodes.get(device, 0) + round(STAGE_NODES[stage] * scale)
    order = [path[key] for key in sorted(path)] + [devices[-1]]
    work.hops = sum(1 for i in range(1, len(order)) if order[i] != order[i - 1])
    work.ram_experts = [int(ram_experts[layer]) for layer in sorted(ram_experts)]
    return work
