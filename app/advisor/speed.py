"""Speed prediction: decode and prefill tokens per second for a placement, as a range.

Decode (one token at a time) is memory bound. Each token reads, on the device that holds
them: every dense weight (attention, norms, router, shared experts, output), the chosen
top-k routed experts of each MoE layer (k / n_expert of their bytes, routing assumed
uniform), one row of the embeddings and the KV cache up to the current position. Time per
token is the sum over devices of bytes / (bandwidth x efficiency), plus fixed latencies:
each graph node costs a kernel launch (GPU) or a thread-pool barrier (CPU), counted per
stage of a layer (attention, routing, routed experts) on the stage's device, and each hop
between devices costs a small copy and a synchronisation. With hot experts in VRAM (engine
patch 0004), the expected hit rate's share of the cached layers' routed-expert reads comes
from VRAM instead of RAM, and each cached layer adds its split's nodes on the GPU
(app/advisor/expert_cache.py); a dynamic cache's copies read RAM too: from pinned memory the
copy engine's reads share RAM's bandwidth with the CPU's (a CPU bound by its cores does not
feel them), from the mapped file each token waits for them at the staging copy's rate.

Prefill (a prompt, in ubatches of ``n_ubatch`` tokens) is compute bound on a GPU: each
matmul's FLOPs over the GPU's tensor peak x an efficiency that grows with the weight's row
length, routed experts' lower as their ``u k / n_expert`` tokens each fill a part of the
matmul tiles; the last layer's FFN runs for the prompt's last token only (llama.cpp keeps
only the output rows there). Weights in RAM are computed on the GPU all the same for
ubatches of 32+ tokens (llama.cpp's op offload): each (of routed experts, the ones some
token of the ubatch chose) is copied to the GPU for every ubatch before its matmul, never
beside one, over PCIe from pinned memory (``use_mmap=False``) or through the CUDA driver's
staging memcpy from pageable memory (an mmapped file), at the rates the host-to-GPU probe
measured through the CUDA runtime (app/hardware/h2d.py), else at estimates from the link's
peak and the RAM probe's one-thread copy. On a CPU, prefill is compute bound against the
measured BLAS FLOP/s.

The bandwidths come from the RAM probe (app/hardware/bandwidth.py) and NVML or a table
(app/advisor/gpu_specs.py); the efficiencies below are llama.cpp's, each a (low, high) pair
that turns into the (pessimistic, optimistic) ends of the range. The CPU reads weights at a
share of the probe's all-core read rate, and, where they are in the file's layout (the GPU's
host buffer, or repacking off), at most at a share of one core's read rate per thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from app.advisor.expert_cache import HitRate, HotExperts, hot_experts
from app.advisor.gpu_specs import gpu_spec
from app.advisor.memory import is_mla, layer_devices, tensor_device
from app.engine.placement import CPU_DEVICE, PlacementPlan, tensor_overrides
from app.gguf.info import GGUFModel, attention_shape, kv_bytes_per_layer, sliding_window_layers
from app.hardware.bandwidth import RamBandwidth
from app.hardware.h2d import HostCopyRates
from app.hardware.model import Gpu

Range = tuple[float, float]  # (pessimistic, optimistic)
# Share of peak memory bandwidth llama.cpp's quantized matrix-vector kernels stream at batch 1.
GPU_BW_EFFICIENCY: Range = (0.55, 0.80)
# Share of the probe's read bandwidth llama.cpp's CPU dot-product kernels reach (the probe
# is a pure streaming sum, the best case; the kernels also unpack quant blocks).
CPU_BW_EFFICIENCY: Range = (0.55, 0.85)
# A thread of llama.cpp's CPU kernels on weights in the file's layout (the GPU's host buffer,
# or --no-repack) reads at this share of the probe's one-thread read rate (unpacking quant
# blocks; the thread pool's barrier waits for the slowest): 0.30-0.48 over 26 decode runs with
# experts in RAM on four hosts (two H200 and two H100 instances, issue 19), where their share
# of the all-core rate ranged 0.48-1.24. So 16 threads of a host whose cores stream slowly
# (the H100 host's 7.7 GB/s a core against the H200's 8.6) decode below its all-core figure.
# Repacked weights (CPU only, or no_host) run faster kernels: the all-core bound alone.
CPU_THREAD_EFFICIENCY: Range = (0.30, 0.45)
# Types whose CPU dot products run slower than the bandwidth they read, as a share of it:
# gpt-oss's MXFP4 experts in RAM (measured on the H200 host's 16 Xeon cores, issue 19).
CPU_KERNEL_SPEED = {"MXFP4": 0.55}
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
# Share of the GPU's fp16 tensor peak llama.cpp's quantized matmul (MMQ) reaches in prefill
# of dense layers (pp512 figures of llama-bench on datacenter and desktop GPUs).
GPU_FLOPS_EFFICIENCY: Range = (0.08, 0.20)
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
# CPU prefill: llama.cpp's int8 dot-product GEMM against numpy's float32 BLAS on the same cores.
CPU_FLOPS_EFFICIENCY: Range = (0.4, 1.0)
# Host-to-GPU copies, not measured: pinned memory reaches this share of the PCIe link; pageable
# memory (mmap) goes through the CUDA driver's staging memcpy, this share of the RAM probe's
# one-thread copy rate: 0.78-1.52, geometric mean 1.07, over the 18 experts-in-RAM runs on the
# H200 (0.73-0.79 on three of the H100 host's five: a numpy copy is not the driver's).
PINNED_EFFICIENCY: Range = (0.75, 0.90)
PAGEABLE_EFFICIENCY: Range = (0.85, 1.35)
# Host-to-GPU copies measured through the CUDA runtime (app/hardware/h2d.py: one 256 MiB
# cudaMemcpy from a mapped file, from pinned memory): llama.cpp's copies of the used experts,
# tensor by tensor with a synchronisation before each, at this share of them. Not fitted yet:
# set around 1 until bench/jobs/h2d-probe-h200.sh measures the probe beside the prefill runs
# (bench/copy_rate_fit.py turns those rows into these ranges).
MAPPED_COPY_EFFICIENCY: Range = (0.85, 1.15)
PINNED_COPY_EFFICIENCY: Range = (0.85, 1.0)
# llama.cpp runs the last layer's FFN for the ubatch's output tokens only (the prompt's last
# one): too few for op offload, so its routed experts are read where they are, never copied
FFN_CLASSES = ("dense_ffn", "shared_experts", "router", "routed_experts")
OP_OFFLOAD_MIN_BATCH = 32  # ggml's scheduler offloads host-weight ops from this batch size
# When RAM was not measured: a dual-channel DDR5 desktop (stated in the prediction's notes).
TYPICAL_RAM = RamBandwidth(read_bw=60e9, read_bw_1=20e9, copy_bw_1=10e9, matmul_flops=500e9,
                           threads=8, buffer_bytes=0, cpu="typical desktop")


@dataclass
class SpeedRange:
    low: float
    high: float

    @property
    def mid(self) -> float:
        """The geometric middle: the range's ends are factors around it."""
        return math.sqrt(self.low * self.high)

    def __str__(self) -> str:
        return f"{_fmt(self.low)}-{_fmt(self.high)} t/s"


@dataclass
class Prediction:
    decode: SpeedRange
    prefill: SpeedRange
    decode_bytes: dict[str, int]  # bytes read per decoded token, per device
    notes: list[str] = field(default_factory=list)
    # hot experts in VRAM: the share of the cached layers' routed selections they serve (None: no cache)
    expert_hit_rate: HitRate | None = None
    # bytes of weights in RAM the prefill copies to the GPU (op offload), over all its ubatches
    prefill_copy_bytes: int = 0


@dataclass
class DeviceRates:
    bandwidth: float  # bytes/s
    flops: float  # FLOP/s peak
    h2d_pinned: float = 0.0  # GPUs: host-to-device bytes/s, the link's peak
    source: str = ""
    # the CPU, weights in the file's layout: threads x one thread's read rate (0: no such bound)
    thread_bw: float = 0.0
    # GPUs: host-to-device copies measured through the CUDA runtime (None: estimated)
    host_copy: HostCopyRates | None = None

    def read_rate(self, end: int, gpu: bool) -> float:
        """Bytes/s the device's kernels read weights at, at the range's ``end``."""
        if gpu:
            return self.bandwidth * GPU_BW_EFFICIENCY[end]
        rate = self.bandwidth * CPU_BW_EFFICIENCY[end]
        if self.thread_bw:
            rate = min(rate, self.thread_bw * CPU_THREAD_EFFICIENCY[end])
        return rate

    def copy_rate(self, end: int, mapped_file: bool, ram: RamBandwidth) -> float:
        """Bytes/s weights in RAM are copied to this GPU at (op offload), at the range's ``end``:
        from a memory-mapped file (pageable) or from pinned memory. Measured where the probe
        ran on this GPU; else the link's peak and, from a mapped file, the RAM probe's copy."""
        if self.host_copy is not None:
            if mapped_file:
                return self.host_copy.from_file * MAPPED_COPY_EFFICIENCY[end]
            return self.host_copy.pinned * PINNED_COPY_EFFICIENCY[end]
        pinned = self.h2d_pinned * PINNED_EFFICIENCY[end]
        return min(ram.copy_bw_1 * PAGEABLE_EFFICIENCY[end], pinned) if mapped_file else pinned


def device_rates(gpus: dict[str, Gpu | None], ram: RamBandwidth | None, n_threads: int, physical_cores: int,
                 file_layout: bool = False) -> tuple[dict[str, DeviceRates], list[str]]:
    """Rates of the CPU (with ``n_threads`` threads) and of each GPU device, and notes.
    ``file_layout``: the CPU's weights stay in the file's layout (not repacked)."""
    notes = []
    if ram is None:
        ram = TYPICAL_RAM
        notes.append("RAM speed not measured: a typical desktop's assumed")
    threads = n_threads or physical_cores
    cpu_bw = min(ram.read_bw, threads * ram.read_bw_1)
    cpu_flops = ram.matmul_flops * min(1.0, threads / max(physical_cores, 1))
    rates = {CPU_DEVICE: DeviceRates(cpu_bw, cpu_flops, source=f"{cpu_bw / 1e9:.0f} GB/s measured",
                                     thread_bw=threads * ram.read_bw_1 if file_layout else 0.0)}
    for device, gpu in gpus.items():
        spec = gpu_spec(gpu, device)
        # the probe measured CUDA device 0; a GPU of another name is not the one it measured
        measured = ram.host_copy if ram.host_copy and gpu and gpu.name == ram.host_copy.gpu else None
        rates[device] = DeviceRates(spec.bandwidth, spec.flops, spec.pcie, spec.source, host_copy=measured)
        if spec.source.startswith("guessed"):
            notes.append(f"{device}: unknown GPU, its speed is guessed")
    return rates, notes


def predict(model: GGUFModel, plan: PlacementPlan, gpus: dict[str, Gpu | None],
            ram: RamBandwidth | None = None, physical_cores: int = 1,
            n_prompt: int = 512, n_gen: int = 128, profile: list[list[int]] | None = None) -> Prediction:
    """Decode and prefill t/s of ``model`` under ``plan`` on these devices.

    ``gpus`` maps the plan's GPU device names (llama.cpp order) to the detected GPUs; an
    empty map is a CPU-only run. Decode is taken at the middle of generating ``n_gen``
    tokens after a prompt of ``n_prompt``, prefill over that prompt. ``profile`` (routing
    counts remembered for the model) ranks the hot experts a plan's cache holds in VRAM.
    """
    names = list(gpus)
    # with a GPU, llama.cpp keeps weights in RAM in its host buffer (the file's layout) unless no_host
    file_layout = (bool(gpus) and not plan.no_host) or not plan.repack
    rates, notes = device_rates(gpus, ram, plan.n_threads, physical_cores, file_layout)
    ram = ram or TYPICAL_RAM
    work = _token_work(model, plan, names, n_prompt + n_gen // 2)
    hot = hot_experts(model, plan, names, profile)  # decode only: prefill's ubatches skip the cache
    decode = [_decode_seconds(work, rates, end, hot, ram) for end in (0, 1)]
    reads = hot.reads(work.bytes, hot.hit_rate.mid) if hot else work.bytes
    prefill = [_prefill_seconds(model, plan, names, rates, ram, n_prompt, end) for end in (0, 1)]
    if prefill[0].copy_seconds > prefill[0].seconds / 2:
        notes.append("prefill is bound by copying the routed experts in RAM to the GPU for every "
                     f"{plan.n_ubatch}-token ubatch; loading without mmap (pinned memory) or a "
                     f"larger ubatch makes it faster ({_copy_source(rates[names[0]], plan.use_mmap)})")
    return Prediction(
        decode=SpeedRange(1 / decode[0], 1 / decode[1]),
        prefill=SpeedRange(n_prompt / prefill[0].seconds, n_prompt / prefill[1].seconds),
        decode_bytes={d: int(b) for d, b in reads.items()},
        notes=notes,
        expert_hit_rate=hot.hit_rate if hot else None,
        prefill_copy_bytes=int(prefill[0].copy_bytes),
    )


def _copy_source(rates: DeviceRates, mapped_file: bool) -> str:
    """Where the copies' rate came from, for the note."""
    source = "from the mapped file" if mapped_file else "from pinned memory"
    measured = rates.host_copy
    if measured is None:
        estimate = "the RAM probe's copy rate" if mapped_file else "the PCIe link's peak"
        return f"copies {source} estimated from {estimate}"
    rate = measured.from_file if mapped_file else measured.pinned
    return f"copies {source} measured at {rate / 1e9:.1f} GB/s"


@dataclass
class _Work:
    bytes: dict[str, float]  # bytes read per token, per device
    nodes: dict[str, int]  # graph nodes per device, per token (fixed latency each)
    hops: int  # device changes per token
    weights: dict[str, float]  # all weight bytes, per device (a prefill ubatch reads them all)
    flops: dict[str, float]  # FLOPs per prompt token, per device (prefill)
    expert_flops: dict[str, float]  # of which routed experts (their own efficiency)
    # FLOPs of one decoded token's attention over the cache, per device (MLA: compute bound)
    attention_flops: dict[str, float] = field(default_factory=dict)
    # what kernels slower than bandwidth add, as bytes more at the device's rate (CPU MXFP4)
    slow_bytes: dict[str, float] = field(default_factory=dict)
    ram_experts: list[int] = field(default_factory=list)  # bytes of RAM experts, per MoE layer


def _token_work(model: GGUFModel, plan: PlacementPlan, gpus: list[str], position: int) -> _Work:
    n_layer = model.n_layer
    devices = layer_devices(plan, n_layer, gpus)
    rules = tensor_overrides(plan, n_layer) if gpus else []
    k = plan.n_expert_used or model.n_expert_used or 1
    share = k / model.n_expert if model.n_expert else 1.0
    work = _Work({}, {}, 0, {}, {}, {})
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
            if device == CPU_DEVICE and t.layer is not None:
                ram_experts[t.layer] = ram_experts.get(t.layer, 0.0) + t.n_bytes
        elif cls == "embeddings":
            n_bytes /= max(t.shape[-1], 1)  # one row per token (shape: n_embd, n_vocab)
            flops = 0.0
        elif cls == "output":
            flops = 0.0  # logits of the prompt's last token only
        work.bytes[device] = work.bytes.get(device, 0.0) + n_bytes
        if device == CPU_DEVICE and t.type_name in CPU_KERNEL_SPEED:  # read as slower bytes
            slower = n_bytes * (1 / CPU_KERNEL_SPEED[t.type_name] - 1)
            work.slow_bytes[device] = work.slow_bytes.get(device, 0.0) + slower
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


def _decode_seconds(work: _Work, rates: dict[str, DeviceRates], end: int,
                    hot: HotExperts | None = None, ram: RamBandwidth = TYPICAL_RAM) -> float:
    read, nodes = dict(work.bytes), dict(work.nodes)
    copied = 0.0  # the dynamic cache's copies, bytes per token
    if hot is not None:  # the hits' expert bytes come from VRAM; each cached layer adds its split
        read = hot.reads(read, (hot.hit_rate.low, hot.hit_rate.high)[end])
        for device, added in hot.added_nodes(STAGE_NODES[2]).items():
            nodes[device] = nodes.get(device, 0) + added
        copied = sum(hot.copy_bytes.values())
    seconds = TOKEN_S[end] + work.hops * HOP_S[end]
    if any(device != CPU_DEVICE for device in nodes):
        seconds += GPU_TOKEN_S[end]
    for device, n_bytes in read.items():
        gpu = device != CPU_DEVICE
        n_bytes += work.slow_bytes.get(device, 0.0)
        seconds += n_bytes / rates[device].read_rate(end, gpu)
        if not gpu and copied and hot is not None and not hot.copies_wait:
            # the copy engine reads RAM beside the CPU: what both read must pass RAM's bandwidth
            shared = (n_bytes + copied) / (rates[device].bandwidth * CPU_BW_EFFICIENCY[end])
            seconds += max(0.0, shared - n_bytes / rates[device].read_rate(end, gpu))
        seconds += nodes.get(device, 0) * (GPU_NODE_S if gpu else CPU_NODE_S)[end]
    if hot is not None and hot.copies_wait:  # between tokens, through the driver's staging copy
        seconds += sum(n_bytes / rates[device].copy_rate(end, True, ram)
                       for device, n_bytes in hot.copy_bytes.items())
    for device, flops in work.attention_flops.items():
        efficiency = GPU_FLOPS_EFFICIENCY if device != CPU_DEVICE else CPU_FLOPS_EFFICIENCY
        seconds += flops / (rates[device].flops * efficiency[end])
    return seconds


@dataclass
class _Prefill:
    seconds: float  # the whole prompt, copies included
    copy_seconds: float  # of which copying weights in RAM to the GPU (op offload)
    copy_bytes: float  # what those copies move


def _prefill_seconds(model: GGUFModel, plan: PlacementPlan, gpus: list[str],
                     rates: dict[str, DeviceRates], ram: RamBandwidth, n_prompt: int,
                     end: int) -> _Prefill:
    """Seconds to prefill ``n_prompt`` tokens in ubatches, at the range's ``end``."""
    u = max(1, min(plan.n_ubatch, plan.n_batch))
    matmuls = _prefill_matmuls(model, plan, gpus)
    k = plan.n_expert_used or model.n_expert_used or 1
    n_expert = max(model.n_expert, 1)
    seconds = REQUEST_S[end]
    copy_seconds = copy_bytes = 0.0
    for start in range(0, n_prompt, u):
        m = min(u, n_prompt - start)
        last_ubatch = start + m == n_prompt  # it holds the one output token
        work = _token_work(model, plan, gpus, start + m)  # nodes, hops, attention over the prompt
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
                used = 1 - (1 - k / n_expert) ** m if mm.routed else 1.0
                copied += mm.n_bytes * used
            flops = m * mm.flops * (k if mm.routed else 1)
            if device == CPU_DEVICE:
                cpu_speed = rates[device].flops * CPU_FLOPS_EFFICIENCY[end]
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
    return _Prefill(seconds + copy_seconds, copy_seconds, copy_bytes)


@dataclass
class _Matmul:
    device: str  # where the weight lives
    row: int  # values per row of the weight (the K of the product)
    flops: float  # per token (routed experts: per token and chosen expert)
    n_bytes: int
    type_name: str
    routed: bool
    output_only: bool  # the last layer's FFN, run for the output token only


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
        matmuls.append(_Matmul(device, t.shape[0], per_token, t.n_bytes, t.type_name, routed, output_only))
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


def _fmt(tps: float) -> str:
    return f"{tps:.0f}" if tps >= 10 else f"{tps:.1f}"
