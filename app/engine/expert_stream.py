"""Routed experts from the SSD: set up engine patch 0005's stream for a loaded model.

The layers whose routed experts llama.cpp placed in RAM read them from the mapped model file;
when the model is larger than RAM, the experts a token routes to are often not in the page
cache, and page faults read them. The stream reads them itself: in "cache" mode a RAM cache of
``slots`` experts per layer (sized by the plan's bytes) that parallel reads fill with the
experts routed and not held, least recently used out; in "advise" mode the kernel is asked for
the routed experts' pages before the matmuls touch them. The cache starts with each layer's
most chosen experts in the routing profile remembered for this model file, if any.
"""

from __future__ import annotations

from app.engine import ggml_backend, routing_profiles
from app.engine.placement import PlacementPlan, expert_stream_slots
from app.engine.protocol import ExpertStreamInfo
from app.gguf import info as gguf_info


def unavailable(plan: PlacementPlan, reason: str) -> ExpertStreamInfo:
    return ExpertStreamInfo(mode=plan.expert_stream, available=False, reason=reason)  # type: ignore[arg-type]


def cache_bytes(info: gguf_info.GGUFModel, slots: int, layers: list[int] | None = None) -> int:
    """RAM a cache of ``slots`` experts in each of ``layers`` (default: every MoE layer) takes:
    the inverse of ``cache_slots``, for a plan that wants that many."""
    layers = list(info.moe_layers) if layers is None else layers
    return slots * info.expert_bytes(layers) * len(layers)


def cache_slots(plan: PlacementPlan, info: gguf_info.GGUFModel, layers: list[int]) -> int:
    return expert_stream_slots(plan, info.n_expert, info.expert_bytes(layers), len(layers))


def setup(ctx: int, info: gguf_info.GGUFModel, plan: PlacementPlan,
          experts_on_gpu: set[int]) -> ExpertStreamInfo:
    """Set the stream up on a fresh context. When it cannot be (a build without the patch, no
    layer in RAM, a cache too small for one token), the model reads its mapped file as before
    and the result says why."""
    if not ggml_backend.has_stream_patch():
        return unavailable(plan, "this engine build lacks MoE Desk's streaming patch (0005); "
                                 "reinstall with installers/install.py")
    layers = [il for il in info.moe_layers if il not in experts_on_gpu]
    if not layers:
        return unavailable(plan, "every layer's routed experts are in VRAM")
    k = plan.n_expert_used or info.n_expert_used
    slots = 0
    if plan.expert_stream == "cache":
        slots = cache_slots(plan, info, layers)
        if slots < k:
            need = cache_bytes(info, k, layers)
            return unavailable(plan, f"a RAM cache of {plan.expert_stream_bytes / 2**30:.2f} GiB "
                                     f"holds fewer than one token's {k} experts a layer; give it "
                                     f"at least {need / 2**30:.2f} GiB")
    per_layer = [(slots or 1) if il in layers else 0 for il in range(info.n_layer)]
    threads = max(1, plan.expert_stream_threads)
    held = ggml_backend.stream_init(ctx, per_layer, plan.expert_stream, threads)
    if held < 0:
        return unavailable(plan, "llama.cpp could not stream the experts (they are not mapped "
                                 "from the file: mmap off or repacked); see the engine log")
    if plan.expert_stream == "cache":
        profile = routing_profiles.remembered_for(info)
        if profile is not None:
            for il in layers:
                ggml_backend.stream_set_experts(ctx, il, routing_profiles.most_chosen(profile, il, slots))
    return ExpertStreamInfo(mode=plan.expert_stream, available=True, slots=slots,  # type: ignore[arg-type]
                            layers=layers, bytes=held, io_threads=threads)
