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
from VRAM instead of RAM, and each cached layer adds its split's maps on the GPU, its pack's
expert stage running beside the layer's CPU part (a token pays what it takes past that;
app/advisor/expert_cache.py); a dynamic cache's copies read RAM too: from pinned memory the
copy engine's reads share RAM's bandwidth with the CPU's (a CPU bound by its cores does not
feel them) and what the link cannot carry under the CPU's part of a token lengthens it, from the
mapped file each token waits for them at the staging copy's rate.

Prefill is app/advisor/prefill.py's; the devices' rates and the shares of them llama.cpp
reaches are app/advisor/device_rates.py's; a token's work and the fixed latencies are
app/advisor/token_work.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from app.advisor.device_rates import (
    COPY_LINK_SHARE,
    CPU_FLOPS_EFFICIENCY,
    GPU_FLOPS_EFFICIENCY,
    TYPICAL_RAM,
    DeviceRates,
    device_rates,
)
from app.advisor.expert_cache import HitRate, HotExperts, hot_experts
from app.advisor.prefill import prefill_seconds
from app.advisor.token_work import (
    CPU_NODE_S,
    GPU_NODE_S,
    GPU_TOKEN_S,
    HOP_S,
    STAGE_NODES,
    TOKEN_S,
    TokenWork,
    token_work,
)
from app.engine.placement import CPU_DEVICE, PlacementPlan
from app.gguf.info import GGUFModel
from app.hardware.bandwidth import RamBandwidth
from app.hardware.model import Gpu


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
    # seconds a decoded token waits for the dynamic cache's copies on the link to the GPU past the
    # CPU's part of it (pinned memory), at the range's middle
    copy_link_wait: float = 0.0



def predict(model: GGUFModel, plan: PlacementPlan, gpus: dict[str, Gpu | None],
            ram: RamBandwidth | None = None, physical_cores: int = 1,
            n_prompt: int = 512, n_gen: int = 128, profile: list[list[int]] | None = None,
            prompt_experts: float | None = None) -> Prediction:
    """Decode and prefill t/s of ``model`` under ``plan`` on these devices.

    ``gpus`` maps the plan's GPU device names (llama.cpp order) to the detected GPUs; an
    empty map is a CPU-only run. Decode is taken at the middle of generating ``n_gen``
    tokens after a prompt of ``n_prompt``, prefill over that prompt. ``profile`` (routing
    counts remembered for the model) ranks the hot experts a plan's cache holds in VRAM;
    ``prompt_experts``: the share of a layer's routed experts the prompt's tokens chose, where
    counted (a benchmark's; None: as tokens that choose independently).
    """
    names = list(gpus)
    # with a GPU, llama.cpp keeps weights in RAM in its host buffer (the file's layout) unless no_host
    file_layout = (bool(gpus) and not plan.no_host) or not plan.repack
    rates, notes = device_rates(gpus, ram, plan.n_threads, physical_cores, file_layout,
                                expert_weights=model.expert_weights())
    ram = ram or TYPICAL_RAM
    work = token_work(model, plan, names, n_prompt + n_gen // 2)
    hot = hot_experts(model, plan, names, profile)
    if kernels := rates[CPU_DEVICE].kernel_note(work.cpu_type_bytes):
        notes.append(kernels)
    ends = [_decode_seconds(work, rates, end, hot, ram) for end in (0, 1)]
    decode, link_wait = [seconds for seconds, _ in ends], [wait for _, wait in ends]
    reads = hot.reads(work.bytes, hot.hit_rate.mid) if hot else work.bytes
    prefill = [prefill_seconds(model, plan, names, rates, ram, n_prompt, end, hot, prompt_experts)
               for end in (0, 1)]
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
        copy_link_wait=sum(link_wait) / 2,
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


def _decode_seconds(work: TokenWork, rates: dict[str, DeviceRates], end: int,
                    hot: HotExperts | None = None, ram: RamBandwidth = TYPICAL_RAM) -> tuple[float, float]:
    """A decoded token's seconds at the range's ``end``, and of them the wait for the cache's
    copies on the link past the CPU's part of the token."""
    read, nodes = dict(work.bytes), dict(work.nodes)
    beside = 0.0  # bytes per token the copy engine reads from RAM beside the CPU (pinned copies)
    if hot is not None:  # the hits' expert bytes come from VRAM; each cached layer adds its split
        read = hot.reads(read, (hot.hit_rate.low, hot.hit_rate.high)[end])
        for device, added in hot.added_nodes().items():
            nodes[device] = nodes.get(device, 0) + added
        beside = 0.0 if hot.copies_wait else sum(hot.copy_bytes.values())
    seconds = TOKEN_S[end] + work.hops * HOP_S[end]
    if any(device != CPU_DEVICE for device in nodes):
        seconds += GPU_TOKEN_S[end]
    cpu_seconds = 0.0  # the CPU's part of the token: the pinned copies' window on the link
    link_wait = 0.0
    for device, n_bytes in read.items():
        gpu = device != CPU_DEVICE
        kernel_speed = 1.0
        if not gpu:  # by type; and dense weights stream past the cost each expert has (the hits
            # leave the dense bytes as they are)
            dense = work.bytes.get(CPU_DEVICE, 0.0) - work.cpu_expert_bytes
            kernel_speed = (rates[device].kernel_speed(work.cpu_type_bytes)
                            * rates[device].dense_share_speed(dense, n_bytes))
        reading = n_bytes / rates[device].read_rate(end, gpu, kernel_speed)
        if not gpu and beside:  # what the CPU and the copy engine read must pass RAM's bandwidth
            reading = max(reading, (n_bytes + beside) / rates[device].shared_read_rate(end))
        reading += nodes.get(device, 0) * (GPU_NODE_S if gpu else CPU_NODE_S)[end]
        seconds += reading
        if not gpu:
            cpu_seconds = reading
    if hot is not None:  # the packs' expert stage, launched beside the CPU's part: what it takes past it
        pack_stage = max((n * GPU_NODE_S[end] for n in hot.beside_nodes(STAGE_NODES[2]).values()),
                         default=0.0)
        seconds += max(pack_stage - cpu_seconds, 0.0)
    if hot is not None and hot.copies_wait:  # between tokens, through the driver's staging copy
        seconds += sum(n_bytes / rates[device].copy_rate(end, True, ram)
                       for device, n_bytes in hot.copy_bytes.items())
    elif hot is not None and hot.copy_bytes:  # from pinned memory, under the CPU's part of the token
        link = max(n_bytes / (rates[device].copy_rate(end, False, ram) * COPY_LINK_SHARE[end])
                   for device, n_bytes in hot.copy_bytes.items())  # each GPU's on its own link
        link_wait = max(link - cpu_seconds, 0.0)
        seconds += link_wait
    for device, flops in work.attention_flops.items():
        efficiency = GPU_FLOPS_EFFICIENCY if device != CPU_DEVICE else CPU_FLOPS_EFFICIENCY
        seconds += flops / (rates[device].flops * efficiency[end])
    return seconds, link_wait


def _fmt(tps: float) -> str:
    return f"{tps:.0f}" if tps >= 10 else f"{tps:.1f}"
