"""Prefill time for the speed model (app/advisor/speed.py).

Prefill (a prompt, in ubatches of ``n_ubatch`` tokens) is compute bound on a GPU: each
matmul's FLOPs over the GPU's tensor peak x an efficiency that grows with the weight's row
length, routed experts' lower as their ``u k / n_expert`` tokens each fill a part of the
matmul tiles; the last layer's FFN runs for the prompt's last token only (llama.cpp keeps
only the output rows there). Weights in RAM are computed on the GPU all the same for
ubatches of 32+ tokens (llama.cpp's op offload): each (of routed experts, the ones some
token of the ubatch chose, less those a hot-expert cache holds on that GPU: those are copied
from VRAM) is copied to the GPU for every ubatch before its matmul, never beside one, over
PCIe from pinned memory (``use_mmap=False``) or through the CUDA driver's staging memcpy
from pageable memory (an mmapped file), at the rates the host-to-GPU probe measured through
the CUDA runtime (app/hardware/h2d.py), else at estimates from the link's peak and the RAM
probe's one-thread copy. On a CPU, prefill is compute bound against the measured BLAS FLOP/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.advisor.device_rates import (
    CPU_FLOPS_EFFICIENCY,
    CPU_PREFILL_SPEED_FILE_LAYOUT,
    CPU_PREFILL_SPEED_REPACKED,
    DeviceRates,
    Range,
)
from app.advisor.expert_cache import HotExperts
from app.advisor.memory import layer_devices, tensor_device
from app.advisor.token_work import CPU_NODE_S, GPU_NODE_S, HOP_S, REQUEST_S, token_work
from app.engine.placement import CPU_DEVICE, PlacementPlan, tensor_overrides
from app.gguf.info import GGUFModel, attention_shape, sliding_window_layers
from app.hardware.bandwidth import RamBandwidth

# Prefill's matmuls on a GPU, fitted on the H200 (issue 19: the nine all-GPU family runs and
# Qwen3-30B's 48 layers, within 6%): MMQ reaches this share
# of the fp16 tensor peak for long rows, K / (K + MATMUL_ROW_HALF) of it for rows of K values
# (a tile's fixed costs over its K loop: Qwen3-30B's 768-wide down projection gets a third);
# routed experts with r tokens each fill r of a tile's 128 token columns (llama.cpp picks
# 128-token tiles on NVIDIA for the whole ubatch) and run at (r / 128) ** 0.7 of that: empty
# columns cost less than full ones. MXFP4 experts (gpt-oss) run 0.75x Q4_0's on Hopper.
GPU_MATMUL_EFFICIENCY: Range = (0.15, 0.216)
MATMUL_ROW_HALF = 1536
MMQ_TILE = 128
TILE_FILL_EXPONENT = 0.7
GPU_KERNEL_SPEED = {"MXFP4": 0.75}
# llama.cpp runs the last layer's FFN for the ubatch's output tokens only (the prompt's last
# one): too few for op offload, so its routed experts are read where they are, never copied
FFN_CLASSES = ("dense_ffn", "shared_experts", "router", "routed_experts")
OP_OFFLOAD_MIN_BATCH = 32  # ggml's scheduler offloads host-weight ops from this batch size


@dataclass
class Prefill:
    seconds: float  # the whole prompt, copies included
    copy_seconds: float  # of which copying weights in RAM to the GPU (op offload)
    copy_bytes: float  # what those copies move


def prefill_seconds(model: GGUFModel, plan: PlacementPlan, gpus: list[str],
                    rates: dict[str, DeviceRates], ram: RamBandwidth, n_prompt: int,
                    end: int, hot: HotExperts | None = None,
                    prompt_experts: float | None = None) -> Prefill:
    """Seconds to prefill ``n_prompt`` tokens in ubatches, at the range's ``end``; ``hot``: the
    plan's hot-expert cache, whose packs on the first GPU spare their experts' copies;
    ``prompt_experts``: the share of a layer's routed experts a ubatch's tokens chose, where a
    prompt's routing was counted (None: tokens that choose independently, k of n each)."""
    u = max(1, min(plan.n_ubatch, plan.n_batch))
    matmuls = _prefill_matmuls(model, plan, gpus)
    k = plan.n_expert_used or model.n_expert_used or 1
    n_expert = max(model.n_expert, 1)
    seconds = REQUEST_S[end]
    copy_seconds = copy_bytes = 0.0
    cpu_expert_speed = (CPU_PREFILL_SPEED_FILE_LAYOUT if rates[CPU_DEVICE].file_layout  # by type
                        else CPU_PREFILL_SPEED_REPACKED)
    for start in range(0, n_prompt, u):
        m = min(u, n_prompt - start)
        last_ubatch = start + m == n_prompt  # it holds the one output token
        work = token_work(model, plan, gpus, start + m)  # nodes, hops, attention over the prompt
        offload = bool(gpus) and plan.op_offload and m >= OP_OFFLOAD_MIN_BATCH
        target = gpus[0] if offload else CPU_DEVICE  # ggml offloads to the first GPU
        busy: dict[str, float] = {}  # seconds of matmuls per device
        read: dict[str, float] = {}  # bytes of weights read per device
        copied = 0.0
        for mm in matmuls:
            if mm.output_only:  # the last layer's FFN: one token, read where its weights are
                if last_ubatch:
                    share = k / n_expert if mm.routed else 1.0
                    read[mm.device] = read.get(mm.device, 0.0) + mm.n_bytes * share
                continue
            device = target if mm.device == CPU_DEVICE and offload else mm.device
            if device != mm.device:  # a weight in RAM, copied in for this ubatch
                used = 1.0
                if mm.routed:
                    used = prompt_experts if prompt_experts is not None else 1 - (1 - k / n_expert) ** m
                if mm.routed and hot and hot.pack_devices.get(mm.layer) == target:
                    used *= 1 - hot.slots / n_expert  # (the held ones come from VRAM, ~free)
                copied += mm.n_bytes * used
            flops = m * mm.flops * (k if mm.routed else 1)
            if device == CPU_DEVICE:
                cpu_speed = rates[device].flops * CPU_FLOPS_EFFICIENCY[end]
                if mm.routed:
                    cpu_speed *= cpu_expert_speed.get(mm.type_name, 1.0)
                busy[device] = busy.get(device, 0.0) + flops / cpu_speed
                continue
            speed = rates[device].flops * GPU_MATMUL_EFFICIENCY[end]
            speed *= mm.row / (mm.row + MATMUL_ROW_HALF)
            if mm.routed:
                fill = min(1.0, m * k / n_expert / MMQ_TILE)
                speed *= fill ** TILE_FILL_EXPONENT * GPU_KERNEL_SPEED.get(mm.type_name, 1.0)
            busy[device] = busy.get(device, 0.0) + flops / speed
            read[device] = read.get(device, 0.0) + mm.n_bytes
        for device, flops in _attention_flops(model, plan, gpus, start, m).items():
            efficiency = (CPU_FLOPS_EFFICIENCY if device == CPU_DEVICE else GPU_MATMUL_EFFICIENCY)[end]
            busy[device] = busy.get(device, 0.0) + flops / (rates[device].flops * efficiency)
        for device in set(busy) | set(read):
            gpu = device != CPU_DEVICE
            # a ubatch reads each weight once: the floor under few tokens' matmuls
            floor = read.get(device, 0.0) / rates[device].read_rate(end, gpu)
            seconds += max(busy.get(device, 0.0), floor)
            seconds += work.nodes.get(device, 0) * (GPU_NODE_S if gpu else CPU_NODE_S)[end]
        if copied:
            # llama.cpp copies a weight, then runs its matmul, then the next (a synchronisation
            # before each copy): the copies add to the compute
            copy_seconds += copied / rates[target].copy_rate(end, plan.use_mmap, ram)
            copy_bytes += copied
        seconds += work.hops * HOP_S[end]
    return Prefill(seconds + copy_seconds, copy_seconds, copy_bytes)


@dataclass
class _Matmul:
    device: str  # where the weight lives
    row: int  # values per row of the weight (the K of the product)
    flops: float  # per token (routed experts: per token and chosen expert)
    n_bytes: int
    type_name: str
    routed: bool
    output_only: bool  # the last layer's FFN, run for the output token only
    layer: int | None = None


def _prefill_matmuls(model: GGUFModel, plan: PlacementPlan, gpus: list[str]) -> list[_Matmul]:
    """The weight matrices a prompt's tokens go through (not the embeddings; the output head
    for the last token only, counted as a read), and where each weight lives."""
    devices = layer_devices(plan, model.n_layer, gpus)
    rules = tensor_overrides(plan, model.n_layer) if gpus else []
    last = model.n_trunk_layers - 1
    matmuls = []
    for t in model.loaded_tensors:
        if len(t.shape) < 2 or t.tensor_class == "embeddings":
            continue
        device = tensor_device(t.name, t.layer, devices, rules) if gpus else CPU_DEVICE
        routed = t.tensor_class == "routed_experts"
        per_token = 2.0 * math.prod(t.shape) / (max(model.n_expert, 1) if routed else 1)
        output_only = t.tensor_class == "output" or (t.layer == last and t.tensor_class in FFN_CLASSES)
        matmuls.append(_Matmul(device, t.shape[0], per_token, t.n_bytes, t.type_name, routed, output_only,
                               t.layer))
    return matmuls


def _attention_flops(model: GGUFModel, plan: PlacementPlan, gpus: list[str], start: int,
                     m: int) -> dict[str, float]:
    """FLOPs of the attention of ``m`` prompt tokens after ``start`` (QK and PV of every head
    over the cells before each token: start + m / 2 on average), per device of its layer."""
    devices = layer_devices(plan, model.n_layer, gpus)
    a = attention_shape(model)
    window, sliding = model.arch_int("attention.sliding_window"), sliding_window_layers(model)
    flops: dict[str, float] = {}
    for layer in range(model.n_trunk_layers):
        cells = min(start + m / 2, window) if layer in sliding else start + m / 2
        device = devices[layer]
        flops[device] = flops.get(device, 0.0) + 2.0 * a.n_head * (a.key_length + a.value_length) * cells * m
    return flops
