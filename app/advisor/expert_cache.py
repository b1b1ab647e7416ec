"""Expert caches: how many routed selections they serve (the hit rate), and what hot experts in
VRAM change in a decoded token's work.

Two caches hold some of a layer's routed experts nearer the compute than the rest: hot experts
in VRAM for the layers whose experts are in RAM (engine patch 0004, ``PlacementPlan.expert_cache``)
and the RAM cache of experts streamed from the SSD (patch 0005, app/advisor/streaming.py). Both
serve the share of a layer's selections that go to the experts they hold.

**Typical routing** (no profile). Trained routers are skewed: in Qwen3-30B-A3B and
Qwen3-235B-A22B the most chosen 25% of a layer's experts take about 60% of its selections,
which ``top_share(c) = c ** 0.37`` follows for other fractions ``c`` (0.125 -> 0.46,
0.5 -> 0.77), and about 40% of a token's selections repeat the token before's. A cache that
keeps the experts used last (streaming's; llama-cpp-moe-flash's LRU slots) gets the repeats and
of the rest the skew's share, ``0.4 + 0.6 top_share(c)`` (0.76 at 25%, 0.86 at 50%, against
75% and 95% measured by llama-cpp-moe-flash on Qwen3-235B-A22B). A static set holds each
layer's most chosen experts: ``top_share(c)`` when ranked well, ``c`` when the routing is
uniform or the ranking tells nothing. Without a profile the prediction is that pair.

**A profile** (routing counts per layer and expert, app/engine/routing_profiles.py) ranks the
experts a static cache holds. The share its top ``slots`` experts take *in the profile* is too
high for new tokens, for two reasons, and each layer's share is shrunk towards uniform for each:

* chance: a count is partly luck, and the ranking picks the experts luck favoured (with uniform
  routing, 128 tokens' 1,024 selections over 128 experts put ~36% in the top quarter's counts,
  where new tokens give them 25%). Empirical Bayes: an expert's count varies by
  ``tokens (k/n)(1 - k/n)`` by chance alone (k of n experts a token); the counts' spread over
  the experts beyond that is the routing's own skew, so the in-sample share keeps the weight
  ``1 - D chance / spread`` of its distance from uniform. ``D`` = 1 takes the tokens as
  independent; consecutive tokens are not (40% of their selections repeat), which makes
  ``D = (1 + rho) / (1 - rho)`` counted tokens one independent one (rho from that repeat share);
* another text: the experts a new chat favours are partly others than the profile's text did.
  Measured on the dev machine (tiny synthetic models, 128 experts, top-8, host packs, 256
  greedy tokens): new tokens kept 0.75-0.8 of the skew of the engine's warm-up profile (a
  built-in text) with realistic routing, ~1 of a profile of earlier decoding, 0.3 with
  uniform routing (routing there follows the tokens alone).

The optimistic end counts chance only (``D`` = 1, all the skew carried over); the pessimistic
one both (``D`` as above, ``PROFILE_CARRY_LOW`` of the skew). Layers weigh equally: each serves
``k`` selections of every decoded token (a profile's per-layer totals differ only by what
prefill counted). On the runs measured above, the middle of the range against the measured
static hit rate at 8, 16, 32 and 64 slots: realistic routing, the warm-up's profile: within
0.02; a profile of earlier decoding: 0.05-0.10 low; uniform routing: 0.05-0.12 high (warm-up),
within 0.05 (earlier decoding). The profile's own shares were up to 0.19 too high.

**Dynamic** (patch 0004's scored policy: an expert's selections, halved in weight after 16
tokens; a newcomer that scores two more replaces a held expert, one copy a layer a token at
most). It finds the text's own hot set, which a profile's in-sample skew shrunk for chance
alone estimates (the static range's optimistic end, the low end here), and catches part of the
repeats a cache of every miss would (``DYNAMIC_REPEAT_CATCH`` of the LRU's gain over it, the high
end). Without a profile its low end stays uniform routing's (nothing to track). Replayed on a
captured trace (bench/cache_policy_sim.py, realistic routing, the warm-up's profile) it served
45% / 63% at 12.5% / 25% held, where this gives 41-47% / 61-65%; the first policy (copy at the
second miss) measured on the H100 machine with uniform routing 12% / 28%, this gives 15-23% /
28-35% (docs/benchmarks.md, "Fourteenth session").

The eager setting (half-life 4, margin 0.5, two copies a layer a token) catches more of those
repeats: its range runs from the thrifty policy's high end to ``EAGER_REPEAT_CATCH`` of the
LRU's gain (replayed on the 4-layer trace, its warm-up's profile: 53% / 71% where this gives
51-59% / 70-74%; thrifty on the same: 45% / 63%, predicted 46-51% / 66-70%). With its copies
capped (the engine's ``expert_cache_uploads`` a token, the largest score gains copied first)
its range moves from thrifty's towards its own as the square root of its copies' share of the
way from thrifty's 0.4 a layer to its own 1.6: the first copies gain most. Replayed on an
8-layer trace of the Qwen3-30B shape, capped at 0.5 / 0.75 / 1 / 1.25 copies a layer it served
65.1 / 67.6 / 69.3 / 70.8% at 25% held and 46.6 / 49.6 / 51.0 / 52.1% at 12.5%, where this
gives 65.1 / 67.5 / 69.0 / 70.3% and 46.5 / 48.6 / 50.0 / 51.1% between the replay's thrifty
(62.4 / 44.1%) and uncapped eager (71.8 / 52.4%). Capped below thrifty's copies, either
setting's range falls towards the static set's in proportion (eager there did worse: 56.8% at
0.25 copies a layer, dealt out layer by layer, the static set 57.2%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from app.advisor.memory import expert_cache_pack_devices, layer_devices, tensor_device
from app.engine.placement import (
    CPU_DEVICE,
    ExpertCacheMode,
    ExpertCachePolicy,
    PlacementPlan,
    copy_policy,
    expert_cache_slots,
    tensor_overrides,
)
from app.gguf.info import GGUFModel

Profile = list[list[int]]
# c ** SKEW_EXPONENT: the share of selections the top fraction c of experts takes (0.25 -> 0.6)
SKEW_EXPONENT = math.log(0.6) / math.log(0.25)
# share of a token's selections the token before made too: hits in a cache of the experts
# used last
REPEAT_SHARE = 0.4
# the share of a profile's skew beyond chance that a new text keeps, at the pessimistic end
# (measured 0.3-1 by how routing depends on the text; see the module's docstring)
PROFILE_CARRY_LOW = 0.6
# the share of an LRU of every miss's gain over the text's hot set that the dynamic policy
# catches, with a fraction of its copies (fitted on bench/cache_policy_sim.py's replay)
DYNAMIC_REPEAT_CATCH = 0.25
# the same for the eager setting (more copies: two a layer a token, a shorter memory)
EAGER_REPEAT_CATCH = 0.6
# The dynamic cache's copies a cached layer and decoded token, by policy: measured in the engine
# on the 48-layer Qwen3-30B shape with realistic routing, 12.5% / 25% of the experts held:
# thrifty 0.37 / 0.41, eager 1.39 / 1.78 (docs/benchmarks.md, "Fifteenth session")
COPIES_PER_LAYER: dict[ExpertCachePolicy, float] = {"thrifty": 0.4, "eager": 1.6}
# What a cached layer adds to a decoded token's graph (patch 0004's split, docs/engine-patches.md):
# on the GPU, the maps from experts to slots before the CPU's part and the mask and the add of
# the two parts after it; and the routed-expert stage again over the pack (token_work.
# STAGE_NODES), launched beside the CPU's part, so it costs a token only what it takes past
# that. No copy or hop more: the merge is on the GPU, so a cached layer moves data as a layer
# with its experts in RAM does.
MAP_NODES = 6


@dataclass(frozen=True)
class HitRate:
    """Expected share of routed selections a cache serves, as a (pessimistic, optimistic) range."""

    low: float
    high: float
    source: Literal["profile", "typical routing"]  # what ranked the experts, or no profile

    @property
    def mid(self) -> float:
        return (self.low + self.high) / 2

    def __str__(self) -> str:
        low, high = round(100 * self.low), round(100 * self.high)
        return f"{low}%" if low == high else f"{low}-{high}%"


def top_share(fraction: float) -> float:
    """Share of selections the most chosen ``fraction`` of a layer's experts take in typical
    trained routing (Qwen3-MoE, DeepSeek-V3: a quarter of them take 60%)."""
    fraction = min(max(fraction, 0.0), 1.0)
    return fraction ** SKEW_EXPONENT


def lru_hit_rate(share: float) -> float:
    """Hits of a cache of the experts used last whose experts would take ``share`` of the
    selections: the token before's repeats, and of the rest that share."""
    return REPEAT_SHARE + (1 - REPEAT_SHARE) * share


def design_effect(n_expert_used: int, n_expert: int) -> float:
    """How many counted tokens make one independent one, when ``REPEAT_SHARE`` of a token's
    selections repeat the token before's: (1 + rho) / (1 - rho), rho the correlation of an
    expert's use from one token to the next (its chance of use is k / n)."""
    chance = n_expert_used / n_expert if n_expert else 1.0
    if chance >= 1:
        return 1.0
    rho = max(0.0, (REPEAT_SHARE - chance) / (1 - chance))
    return (1 + rho) / (1 - rho)


def held_out_share(counts: list[int], slots: int, n_expert_used: int, design: float = 1.0,
                   carry: float = 1.0) -> float | None:
    """Share of a layer's selections on new tokens that its ``slots`` most counted experts
    take, from its ``counts`` shrunk towards uniform (see the module's docstring; ``design``:
    the design effect D, ``carry``: the share of the skew a new text keeps); None when the
    layer has no counts."""
    n, total = len(counts), sum(counts)
    if n == 0 or total <= 0:
        return None
    slots = min(max(slots, 0), n)
    uniform = slots / n
    top = sum(sorted(counts, reverse=True)[:slots]) / total
    chance = n_expert_used / n
    noise = (total / n_expert_used) * chance * (1 - chance)  # an expert's count variance by chance
    mean = total / n
    spread = sum((c - mean) ** 2 for c in counts) / n
    if noise <= 0 or spread <= 0:
        return top if noise <= 0 else uniform
    weight = carry * max(0.0, 1 - design * noise / spread)
    return uniform + weight * (top - uniform)


def profile_hit_rate(profile: Profile, layers: list[int], slots: int,
                     n_expert_used: int) -> HitRate | None:
    """The static cache's expected hit rate over ``layers`` from a routing ``profile``
    (counts [layer][expert]); layers the profile has no counts for get the typical-routing
    range. None when it has counts for none of them."""
    lows, highs, known = [], [], 0
    for il in layers:
        row = profile[il] if 0 <= il < len(profile) else []
        n_expert = len(row)
        high = held_out_share(row, slots, n_expert_used)
        low = held_out_share(row, slots, n_expert_used, design_effect(n_expert_used, n_expert),
                             PROFILE_CARRY_LOW)
        if high is None or low is None:
            typical = typical_hit_rate(slots, n_expert or max(map(len, profile), default=0))
            lows.append(typical.low)
            highs.append(typical.high)
            continue
        known += 1
        lows.append(low)
        highs.append(high)
    if not known:
        return None
    return HitRate(sum(lows) / len(lows), sum(highs) / len(highs), "profile")


def typical_hit_rate(slots: int, n_expert: int) -> HitRate:
    """A static cache of ``slots`` experts a layer without a profile: uniform routing (or a
    ranking that tells nothing) to a well-ranked typical skew."""
    if n_expert <= 0:
        return HitRate(0.0, 0.0, "typical routing")
    fraction = min(max(slots, 0), n_expert) / n_expert
    return HitRate(fraction, top_share(fraction), "typical routing")


def predicted_hit_rate(slots: int, n_expert: int, n_expert_used: int,
                       profile: Profile | None = None, layers: list[int] | None = None,
                       policy: ExpertCacheMode = "static", copies: ExpertCachePolicy = "thrifty",
                       uploads: int = 0) -> HitRate:
    """Expected share of the cached layers' routed selections that hot experts in VRAM serve
    while decoding: ``slots`` of ``n_expert`` experts a layer, top-``n_expert_used`` routing.

    ``profile`` (counts [layer][expert], the one that ranks the cache's experts) and
    ``layers`` (the cached layers: those whose routed experts are in RAM) give the estimate
    of ``profile_hit_rate``; without them, ``typical_hit_rate``. "dynamic" starts from that
    (``dynamic_hit_rate``, with its ``copies`` setting and at most ``uploads`` copies a token
    over the cached layers, 0: the setting's own), "off" serves nothing.
    """
    if policy == "off" or slots <= 0 or n_expert <= 0:
        return HitRate(0.0, 0.0, "typical routing")
    static = None
    if profile and layers:
        static = profile_hit_rate(profile, layers, slots, n_expert_used)
    static = static or typical_hit_rate(slots, n_expert)
    if policy != "dynamic":
        return static
    return dynamic_hit_rate(static, copies, copies_a_layer(copies, uploads, len(layers or [])))


def copies_a_layer(copies: ExpertCachePolicy, uploads: int, n_layers: int) -> float:
    """Copies a cached layer and decoded token the dynamic cache makes with the ``copies``
    setting, at most ``uploads`` a token over ``n_layers`` cached layers (0: no cap)."""
    own = COPIES_PER_LAYER[copies]
    return min(own, uploads / n_layers) if uploads > 0 and n_layers > 0 else own


def dynamic_hit_rate(static: HitRate, copies: ExpertCachePolicy = "thrifty",
                     per_layer: float | None = None) -> HitRate:
    """The dynamic policy's range from the static set's (see the module's docstring);
    ``per_layer``: the copies a layer and token it is capped at (None: its setting's own)."""
    low = static.high if static.source == "profile" else static.low
    repeats = lru_hit_rate(static.high) - static.high
    thrifty = (low, max(low, static.high + DYNAMIC_REPEAT_CATCH * repeats))
    fewest = COPIES_PER_LAYER["thrifty"]
    if per_layer is not None and per_layer < fewest:  # below thrifty's copies: towards the static set
        share = max(per_layer, 0.0) / fewest
        return HitRate(static.low + share * (thrifty[0] - static.low),
                       static.high + share * (thrifty[1] - static.high), static.source)
    if copies != "eager":
        return HitRate(*thrifty, static.source)
    eager = (thrifty[1], max(thrifty[1], static.high + EAGER_REPEAT_CATCH * repeats))
    share = eager_share(per_layer)
    return HitRate(thrifty[0] + share * (eager[0] - thrifty[0]),
                   thrifty[1] + share * (eager[1] - thrifty[1]), static.source)


def eager_share(per_layer: float | None) -> float:
    """How far eager with ``per_layer`` copies a layer and token moves the hit rate from
    thrifty's towards its own: the square root of its copies' share of the way between the two
    settings' (see the module's docstring)."""
    thrifty, eager = COPIES_PER_LAYER["thrifty"], COPIES_PER_LAYER["eager"]
    if per_layer is None or per_layer >= eager:
        return 1.0
    return math.sqrt(max(per_layer - thrifty, 0.0) / (eager - thrifty))


# --- hot experts in VRAM in the speed model --------------------------------------------------


def cacheable(model: GGUFModel) -> bool:
    """Whether patch 0004 can cache this model's routed experts: separate up, gate and down
    tensors without biases or scales (not gpt-oss's, not a fused gate_up)."""
    experts = [t.name for t in model.tensors if t.tensor_class == "routed_experts"]
    return bool(experts) and all(name.endswith("_exps.weight") and "gate_up" not in name
                                 for name in experts)


def ram_expert_bytes(model: GGUFModel, plan: PlacementPlan, gpus: list[str]) -> dict[int, int]:
    """Bytes of routed experts in RAM per MoE layer under ``plan`` on a machine with ``gpus``
    (every layer's without a GPU)."""
    devices = layer_devices(plan, model.n_layer, gpus)
    rules = tensor_overrides(plan, model.n_layer) if gpus else []
    in_ram: dict[int, int] = {}
    for t in model.loaded_tensors:
        if t.tensor_class != "routed_experts" or t.layer is None:
            continue
        if not gpus or tensor_device(t.name, t.layer, devices, rules) == CPU_DEVICE:
            in_ram[t.layer] = in_ram.get(t.layer, 0) + t.n_bytes
    return in_ram


@dataclass(frozen=True)
class HotExperts:
    """What hot experts in VRAM change in a decoded token: of the routed-expert bytes the
    cached layers read from RAM, the hit rate's share is read from the packs in VRAM instead,
    and each cached layer adds its split's graph nodes on the GPU (the pack's expert stage
    beside the CPU's part)."""

    hit_rate: HitRate
    slots: int  # experts a cached layer holds
    read_bytes: dict[str, float]  # per GPU with packs: what its cached layers read from RAM per token
    layers: dict[str, int]  # per GPU: the cached layers whose packs it holds
    # dynamic: bytes copied into the packs per token, per GPU (0: static). Each copy reads RAM
    # as a miss does; from pinned memory the GPU's copy engine reads beside decoding, from the
    # mapped file each token waits for the driver's staging copy (copies_wait)
    copy_bytes: dict[str, float] = field(default_factory=dict)
    copies_wait: bool = False
    # per cached layer, the GPU holding its pack: a prompt's ubatch (op offload to the first
    # GPU) takes the experts a pack on that GPU holds from it instead of copying them from RAM
    pack_devices: dict[int, str] = field(default_factory=dict)

    def reads(self, read: dict[str, float], hit_rate: float) -> dict[str, float]:
        """A token's bytes read per device, ``read`` without the cache, with it at ``hit_rate``:
        the hits' expert bytes from the packs' GPUs instead of RAM."""
        read = dict(read)
        for device, n_bytes in self.read_bytes.items():
            read[CPU_DEVICE] = read.get(CPU_DEVICE, 0.0) - hit_rate * n_bytes
            read[device] = read.get(device, 0.0) + hit_rate * n_bytes
        return read

    def added_nodes(self) -> dict[str, int]:
        """Graph nodes per token the split adds in line, per GPU: the maps, mask and add, per
        cached layer."""
        return {device: n * MAP_NODES for device, n in self.layers.items()}

    def beside_nodes(self, expert_stage_nodes: int) -> dict[str, int]:
        """Graph nodes per token that run beside the CPU's part, per GPU: the routed-expert
        stage (``expert_stage_nodes``) over each cached layer's pack."""
        return {device: n * expert_stage_nodes for device, n in self.layers.items()}


def hot_experts(model: GGUFModel, plan: PlacementPlan, gpus: list[str],
                profile: Profile | None = None) -> HotExperts | None:
    """The hot-expert cache ``plan`` asks for, as the speed model counts it; None when it
    serves nothing (off, no GPU, no routed experts in RAM, no slot, an uncacheable model).
    Each cached layer's pack is on its router's GPU (app/advisor/memory.py's
    expert_cache_pack_devices)."""
    if plan.expert_cache == "off" or not gpus or not model.n_expert or not cacheable(model):
        return None
    in_ram = ram_expert_bytes(model, plan, gpus)
    if not in_ram:
        return None
    slots = expert_cache_slots(plan, model.n_expert, model.expert_bytes(in_ram), len(in_ram))
    if slots <= 0:
        return None
    k = plan.n_expert_used or model.n_expert_used or 1
    # with a GPU, llama.cpp keeps CPU weights in pinned memory only with mmap off
    policy = copy_policy(plan, copies_beside_decoding=not plan.use_mmap)
    copies = (copies_a_layer(policy, plan.expert_cache_uploads, len(in_ram))
              if plan.expert_cache == "dynamic" else 0.0)
    read: dict[str, float] = {}
    layers: dict[str, int] = {}
    copy: dict[str, float] = {}
    packs = expert_cache_pack_devices(model, plan, in_ram, gpus)
    for layer, device in packs.items():
        n_bytes = in_ram[layer]
        read[device] = read.get(device, 0.0) + n_bytes * k / model.n_expert
        layers[device] = layers.get(device, 0) + 1
        if copies:
            copy[device] = copy.get(device, 0.0) + copies * n_bytes / model.n_expert
    rate = predicted_hit_rate(slots, model.n_expert, k, profile, sorted(in_ram), plan.expert_cache, policy,
                              plan.expert_cache_uploads)
    return HotExperts(rate, slots, read, layers, copy, copies_wait=bool(copy) and plan.use_mmap,
                      pack_devices=packs)
