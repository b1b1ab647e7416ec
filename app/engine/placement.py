"""A placement plan: where each part of a model goes, and the llama.cpp settings that go with it.

Pure data and pure functions (no llama.cpp import), so the advisor, the GUI and the tests can
build and inspect plans. ``runtime`` turns a plan into llama.cpp model and context params.

Expert offload in llama.cpp terms: a model is loaded with every layer "on the GPU"
(``n_gpu_layers``), then per-tensor buffer overrides (``tensor_buft_overrides``, the mechanism
behind ``-ot``, ``--cpu-moe`` and ``--n-cpu-moe``) send the routed expert tensors
(``blk.N.ffn_{up,gate,down}_exps``) of chosen layers to host memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

# Routed expert weights: blk.N.ffn_up_exps / ffn_gate_exps / ffn_down_exps (also the fused
# ffn_gate_up_exps of some architectures). Shared experts are ffn_*_shexp and stay put.
ROUTED_EXPERTS_PATTERN = r"\.ffn_(up|down|gate|gate_up)_exps"

CPU_DEVICE = "CPU"
# The context the desktop app and the CLI load a model with unless told otherwise.
DEFAULT_CONTEXT = 8192

FlashAttention = Literal["auto", "on", "off"]
SplitMode = Literal["none", "layer", "row"]
CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
# Hot experts in VRAM (engine patch 0004): off; a fixed set per layer from a routing profile;
# or that set refreshed from routing as tokens are decoded.
ExpertCacheMode = Literal["off", "static", "dynamic"]
# How readily the dynamic cache copies an expert in. A copy reads the expert's bytes from RAM
# as a miss does: "thrifty" copies only experts that will be hit more than once (right where
# the CPU's reads are bound by RAM, as on desktops with two memory channels); "eager" copies
# more for more hits (right where the GPU's copy engine reads beside a CPU bound by its cores,
# as on servers with many channels). The planner picks by predicted decode, autotune measures.
ExpertCachePolicy = Literal["thrifty", "eager"]
# Routed experts of a model larger than RAM, from the SSD (engine patch 0005): llama.cpp's page
# faults on the mapped file; the kernel asked ahead for the routed experts' pages; or a RAM
# cache of experts that parallel reads fill (measured fastest: docs/benchmarks.md).
ExpertStreamMode = Literal["off", "advise", "cache"]


@dataclass
class TensorOverride:
    """Tensors whose name matches ``pattern`` (a regex, searched) go to ``device``.

    ``device`` is a ggml device name as the engine reports it ("CPU", "CUDA0", "Vulkan1", ...).
    """

    pattern: str
    device: str


@dataclass
class PlacementPlan:
    """Everything the engine needs to place and run a model. Defaults suit a CPU machine."""

    n_gpu_layers: int = -1  # -1: every layer; llama.cpp moves nothing to a GPU without one
    # Routed experts in host RAM: "none", "all", or an int N: those of the first N layers.
    experts_in_ram: Literal["none", "all"] | int = "none"
    overrides: list[TensorOverride] = field(default_factory=list)
    main_gpu: int = 0
    split_mode: SplitMode = "layer"
    tensor_split: list[float] = field(default_factory=list)  # proportions per GPU
    n_threads: int = 0  # 0: physical cores
    n_threads_batch: int = 0  # 0: same as n_threads
    use_mmap: bool = True
    use_mlock: bool = False
    # Without a GPU host buffer (which llama.cpp prefers for weights in RAM), llama.cpp copies
    # CPU weights into layouts its kernels read faster (CPU_REPACK; AMX on Xeons that have
    # it): copies in RAM, which the OS cannot drop and read again from the file. False is
    # llama.cpp's --no-repack: weights stay in the mapped file, as streaming a model larger
    # than RAM from the SSD needs.
    repack: bool = True
    # With a GPU, llama.cpp keeps CPU weights in its host buffer (pinned or mapped, the file's
    # layout), which op offload can copy to the GPU for prefill. True is llama.cpp's no_host:
    # they get the CPU's repacked layouts instead (AVX-512/AMX kernels): measured on an H200,
    # decode from RAM +10-18%, prefill about halved. The expert cache needs the file's layout
    # and is unavailable for layers repacked so.
    no_host: bool = False
    n_ctx: int = 4096
    n_batch: int = 2048
    n_ubatch: int = 512
    type_k: CacheType = "f16"
    type_v: CacheType = "f16"
    flash_attn: FlashAttention = "auto"
    n_expert_used: int | None = None  # None: the model's own <arch>.expert_used_count
    op_offload: bool = True  # let llama.cpp run big-batch ops of host tensors on the GPU
    # Chats decoded at once (llama.cpp's parallel sequences, llama-server's -np). Each gets
    # n_ctx tokens of context: the KV cache holds n_ctx * n_parallel cells, in one buffer
    # shared by the sequences (kv_unified), so one batch carries them all.
    n_parallel: int = 1
    # Hot experts in VRAM for the layers whose routed experts are in RAM: per such layer, its
    # most chosen experts are copied into VRAM and the tokens routed to them computed there
    # (the rest on the CPU). Size: expert_cache_slots experts a layer, or, when that is 0,
    # as many as expert_cache_bytes of VRAM holds over those layers.
    expert_cache: ExpertCacheMode = "off"
    expert_cache_slots: int = 0
    expert_cache_bytes: int = 0
    # dynamic: experts copied into VRAM per decoded token, at most (while the next token
    # decodes); 0: the policy's own bound (app/engine/expert_cache.py's COPY_POLICIES)
    expert_cache_uploads: int = 0
    expert_cache_policy: ExpertCachePolicy = "thrifty"
    # Routed experts in RAM streamed from the model file for decoding (engine patch 0005): the
    # weights stay in the mapped file (no repacking, no pinned copies), and in "cache" mode
    # expert_stream_bytes of RAM hold the experts read last (spread over the streamed
    # layers), the rest read when routed, expert_stream_threads reads at a time.
    expert_stream: ExpertStreamMode = "off"
    expert_stream_bytes: int = 0
    expert_stream_threads: int = 16

    def describe(self) -> str:
        """The placement in a sentence for people (advisor page, CLI), override rules one per line."""
        experts = {"none": "none", "all": "all"}.get(str(self.experts_in_ram),
                                                     f"first {self.experts_in_ram} layers")
        layers = "all" if self.n_gpu_layers < 0 else self.n_gpu_layers
        text = (f"context {self.n_ctx:,}, GPU layers {layers}, routed experts in RAM: {experts}, "
                f"threads {self.n_threads or 'auto'}")
        if self.tensor_split:
            text += f", tensor split {' : '.join(f'{x:g}' for x in self.tensor_split)}"
        if not self.use_mmap:
            text += ", mmap off"
        if not self.repack:
            text += ", weights not repacked"
        if self.no_host:
            text += ", CPU weights repacked for the CPU (no_host)"
        if self.expert_cache != "off":
            size = (f"{self.expert_cache_slots} experts a layer" if self.expert_cache_slots
                    else f"{self.expert_cache_bytes / 2**30:.1f} GiB")
            mode = ("dynamic, eager copies" if self.expert_cache == "dynamic"
                    and self.expert_cache_policy == "eager" else self.expert_cache)
            if self.expert_cache == "dynamic":
                mode += copies_cap_text(self.expert_cache_uploads)
            text += f", hot experts in VRAM: {size} ({mode})"
        if self.expert_stream == "cache":
            text += (f", experts streamed from the SSD through a "
                     f"{self.expert_stream_bytes / 2**30:.1f} GiB RAM cache")
        elif self.expert_stream == "advise":
            text += ", experts streamed from the SSD (the kernel asked ahead)"
        return text + "".join(f"\n  rule {o.pattern} = {o.device}" for o in self.overrides)


def copies_cap_text(uploads: int) -> str:
    """A dynamic cache's cap on its copies a token as plans and reasons say it ("": no cap)."""
    return f", {uploads} a token at most" if uploads else ""


def copy_policy(plan: PlacementPlan, copies_beside_decoding: bool) -> ExpertCachePolicy:
    """The dynamic cache's copy policy in use: the plan's, but thrifty where the copies run
    between tokens (from pageable memory), since there each copy is a token's wait and eager's
    many copies would cost more than their hits save."""
    return plan.expert_cache_policy if copies_beside_decoding else "thrifty"


def expert_cache_slots(plan: PlacementPlan, n_expert: int, expert_bytes: int, n_ram_layers: int) -> int:
    """Experts a layer the plan's hot-expert cache holds: its own count, or what its bytes hold
    spread over the ``n_ram_layers`` layers whose experts are in RAM (``expert_bytes``: one
    expert's up, gate and down slices). 0 when off."""
    if plan.expert_cache == "off" or n_ram_layers <= 0:
        return 0
    if plan.expert_cache_slots:
        return min(plan.expert_cache_slots, n_expert)
    if expert_bytes <= 0:
        return 0
    return min(n_expert, plan.expert_cache_bytes // (expert_bytes * n_ram_layers))


def expert_stream_slots(plan: PlacementPlan, n_expert: int, expert_bytes: int, n_layers: int) -> int:
    """Experts a streamed layer's RAM cache holds: what expert_stream_bytes holds spread over
    ``n_layers`` layers, at most n_expert; 0 when the stream is off or not in cache mode."""
    if plan.expert_stream != "cache" or n_layers <= 0 or expert_bytes <= 0:
        return 0
    return min(n_expert, plan.expert_stream_bytes // (expert_bytes * n_layers))


def expert_layer_pattern(layers: range | list[int]) -> str:
    """A regex matching the routed expert tensors of the given layers."""
    ids = sorted(set(layers))
    if not ids:
        raise ValueError("no layers given")
    alternatives = "|".join(str(i) for i in ids)
    return rf"^blk\.({alternatives}){ROUTED_EXPERTS_PATTERN}"


def tensor_overrides(plan: PlacementPlan, n_layer: int) -> list[TensorOverride]:
    """The ordered override list llama.cpp gets: the plan's own rules first, then its shortcut.

    llama.cpp applies the first pattern that matches a tensor, so explicit rules win.
    """
    rules = list(plan.overrides)
    if plan.experts_in_ram == "all":
        rules.append(TensorOverride(ROUTED_EXPERTS_PATTERN, CPU_DEVICE))
    elif plan.experts_in_ram != "none":
        first_n = int(plan.experts_in_ram)
        if first_n < 0:
            raise ValueError("experts_in_ram must be 'none', 'all' or a layer count >= 0")
        if first_n > 0:
            rules.append(TensorOverride(expert_layer_pattern(range(min(first_n, n_layer))), CPU_DEVICE))
    for rule in rules:
        re.compile(rule.pattern)  # a bad regex fails here, with its own message
    return rules


def first_matching_device(name: str, rules: list[TensorOverride]) -> str | None:
    """The device the first matching rule sends tensor ``name`` to, as llama.cpp decides it."""
    for rule in rules:
        if re.search(rule.pattern, name):
            return rule.device
    return None
