"""Hot experts in VRAM: set up engine patch 0004's cache for a loaded model.

For each MoE layer whose routed experts llama.cpp placed in RAM, the patch keeps a pack of
``slots`` experts in VRAM and computes the tokens routed to them there (the rest on the CPU).
Which experts: each layer's most chosen ones in a routing profile (counts per layer and
expert), either given by the client (remembered from an earlier run of the model) or made here
by a short warm-up prefill of a built-in text. "dynamic" then lets the patch refresh the set
from routing as tokens are decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import llama_cpp

from app.engine import ggml_backend, routing_profiles
from app.engine.placement import ExpertCachePolicy, PlacementPlan, copy_policy, expert_cache_slots
from app.engine.protocol import ExpertCacheInfo
from app.gguf import info as gguf_info

# Tests only: without a GPU, keep the packs in RAM (no gain; exercises the split on a CPU).
HOST_PACKS_ENV = "MOEDESK_EXPERT_CACHE_HOST"


@dataclass(frozen=True)
class CopyPolicy:
    """The dynamic cache's policy (patch 0004): an expert's selections are halved in weight
    after ``half_life`` tokens; a newcomer replaces a held expert when it scores ``margin``
    selections more; at most ``per_layer`` copies a cached layer and token (fewer while the
    copies fall behind decoding)."""

    half_life: float
    margin: float
    per_layer: int


# Replayed on Qwen3-like routing (bench/cache_policy_sim.py, 12.5% / 25% of the experts held;
# static: 32% / 52% of selections from VRAM). thrifty: 45% / 63% for ~0.3-0.4 copies a layer
# and token, fewer experts read from RAM (misses + copies) than any other policy tried (copying
# at the second miss, the first policy, copied 1.2-2.5 and read more than static); eager: 53% /
# 71% for 1.2 / 1.6 copies, the fewest misses for copies a CPU does not make.
COPY_POLICIES: dict[ExpertCachePolicy, CopyPolicy] = {
    "thrifty": CopyPolicy(half_life=16.0, margin=2.0, per_layer=1),
    "eager": CopyPolicy(half_life=4.0, margin=0.5, per_layer=2),
}
WARMUP_CHUNK = 64  # tokens per warm-up ubatch (each at least 32: the prefill path, not the cache's)

# Varied prose, code and numbers: the warm-up prefill's routing stands in for a chat's.
WARMUP_TEXT = (
    "The committee met on Tuesday to review the budget for the new library. After a long "
    "discussion about heating costs, they agreed to postpone the decision until spring.\n"
    "def merge(a, b):\n    out = []\n    while a and b:\n        out.append(a.pop(0) if a[0] < b[0] "
    "else b.pop(0))\n    return out + a + b\n"
    "Question: a train leaves at 9:40 and arrives at 13:05. How long is the trip? Answer: 3 "
    "hours and 25 minutes. Photosynthesis turns light, water and carbon dioxide into sugar and "
    "oxygen. In 1969, Apollo 11 landed on the Moon; Armstrong and Aldrin walked on its surface."
)


def slots_per_layer(plan: PlacementPlan, info: gguf_info.GGUFModel, ram_layers: list[int]) -> int:
    """Experts a layer the plan asks for: its own count, or what its byte budget holds."""
    per_expert = info.expert_bytes(ram_layers)
    return expert_cache_slots(plan, info.n_expert, per_expert, len(ram_layers))


def unavailable(plan: PlacementPlan, reason: str) -> ExpertCacheInfo:
    return ExpertCacheInfo(mode=plan.expert_cache, available=False, reason=reason)  # type: ignore[arg-type]


def setup(ctx: int, model: int, info: gguf_info.GGUFModel, plan: PlacementPlan,
          experts_on_gpu: set[int], profile: list[list[int]] | None) -> ExpertCacheInfo:
    """Set the cache up on a fresh context with routing capture on. When it cannot be (no GPU,
    a build without the patch, no layer in RAM), the model runs as it would without it and
    the result says why. Experts are ranked by ``profile`` (the client's), else by the one
    remembered for this model file (routing_profiles), else by a warm-up prefill."""
    if not ggml_backend.has_cache_patch():
        return unavailable(plan, "this engine build lacks MoE Desk's expert cache patch (0004); "
                                 "reinstall with installers/install.py")
    has_gpu = any(d.kind in ("gpu", "igpu") for d in ggml_backend.devices())
    allow_host = os.environ.get(HOST_PACKS_ENV) == "1"
    if not has_gpu and not allow_host:
        return unavailable(plan, "the expert cache needs a GPU; without one every expert is read "
                                 "from RAM anyway")
    ram_layers = [il for il in info.moe_layers if il not in experts_on_gpu]
    if not ram_layers:
        return unavailable(plan, "every layer's routed experts are already in VRAM")
    slots = slots_per_layer(plan, info, ram_layers)
    if slots <= 0:
        return unavailable(plan, "the cache size holds no expert; give it more room")
    per_layer = [slots if il in ram_layers else 0 for il in range(info.n_layer)]
    held = ggml_backend.cache_init(ctx, per_layer, allow_host)
    if held <= 0:
        return unavailable(plan, "llama.cpp could not set up the cache (no VRAM for it, or the "
                                 "experts are not in RAM in the file's layout); see the engine log")
    source = "given"
    if profile is None or len(profile) != info.n_layer:
        source = "remembered"
        profile = routing_profiles.remembered_for(info)
    if profile is None:
        profile, source = warmup_profile(ctx, model, info), "warm-up"
    for il in ram_layers:
        ggml_backend.cache_set_experts(ctx, il, routing_profiles.most_chosen(profile, il, slots))
    beside = ggml_backend.cache_copies_beside_decoding(ctx)
    copies: ExpertCachePolicy | None = None
    if plan.expert_cache == "dynamic":
        copies = copy_policy(plan, beside)
        policy = COPY_POLICIES[copies]
        uploads = plan.expert_cache_uploads or policy.per_layer * len(ram_layers)
        ggml_backend.cache_set_policy(ctx, uploads, policy.per_layer, policy.half_life, policy.margin)
    return ExpertCacheInfo(mode=plan.expert_cache, available=True, slots=slots,  # type: ignore[arg-type]
                           layers=ram_layers, bytes=held, profile_source=source, profile=profile,
                           copies_beside_decoding=beside, copy_policy=copies or "")


def warmup_profile(ctx: int, model: int, info: gguf_info.GGUFModel) -> list[list[int]]:
    """Routing counts of a prefill of WARMUP_TEXT; the context is left empty and the counts
    at zero again.

    Every token asks for its logits: llama.cpp runs the last layer only for the tokens whose
    logits are wanted, which would leave that layer's profile one token long. Chunks of
    WARMUP_CHUNK tokens keep the logits buffer small (a 152k vocabulary: 39 MB).
    """
    vocab = llama_cpp.llama_model_get_vocab(model)
    text = WARMUP_TEXT.encode()
    ids = (llama_cpp.llama_token * (len(text) + 8))()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), ids, len(ids), True, False)
    n = max(0, min(n, llama_cpp.llama_n_ctx(ctx)))
    chunk = min(WARMUP_CHUNK, llama_cpp.llama_n_batch(ctx))
    batch = llama_cpp.llama_batch_init(chunk, 0, 1)
    try:
        for start in range(0, n, chunk):
            piece = ids[start:min(start + chunk, n)]
            batch.n_tokens = len(piece)
            for i, token in enumerate(piece):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, True
            if llama_cpp.llama_decode(ctx, batch) != 0:
                break  # counts so far rank the experts; none at all: by index
    finally:
        llama_cpp.llama_batch_free(batch)
    _, counts = ggml_backend.routing_counts(ctx, info.n_layer, info.n_expert)
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    ggml_backend.routing_reset(ctx)
    return counts
