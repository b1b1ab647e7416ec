"""Streaming from the SSD: how much RAM the expert cache gets, and what decode speed to expect.

When the weights in RAM do not fit, the engine (patch 0005) keeps a RAM cache of routed experts
and reads the others from the SSD when a token routes to them. The plan splits the RAM budget:
what must stay resident (KV cache, buffers) and what is read every token (attention, norms,
router, shared experts, output: the non-expert weights, which stay in the page cache) first,
the rest to the expert cache. Each decoded token then reads, per streamed layer, its
``n_expert_used`` experts less those the cache holds, at the drive's speed for reads of one
expert (the disk probe's random-read figure at depth).

How many selections the cache serves depends on routing (app/advisor/expert_cache.py has the
figures): the cache keeps the experts used last, so the token before's repeats are hits, and of
the rest the share its experts take: ``0.4 + 0.6 c ** 0.37`` for a fraction ``c`` of the
experts with typical skewed routing (measured on the 2-core dev machine: 58% and 87% at
c = 0.12 and 0.38, against 67% and 82% from this; docs/benchmarks.md, "Eleventh session"), or
that share estimated from a routing profile remembered for the model
(app/engine/routing_profiles.py). With uniform routing, ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.advisor.expert_cache import lru_hit_rate, profile_hit_rate, top_share
from app.engine.placement import PlacementPlan
from app.gguf.info import GGUFModel
from app.hardware.disk import DiskSpeed

# When the drive was not measured: a PCIe 4 NVMe SSD's reads of a few MB at depth (stated in
# the prediction's notes).
TYPICAL_DISK = DiskSpeed(seq_read_bw=5e9, random_read_bw=3e9, random_read_bw_1=1e9,
                         block_bytes=4 << 20, depth=16, direct=True, drive="typical NVMe SSD")
# Left to the page cache beyond the non-expert weights (the prefill's reads of the mapped
# file): a floor, or a share of the budget. The cache's own reads bypass the page cache
# (O_DIRECT), so what is left here serves only prefill; more would shrink the cache for
# nothing (measured: docs/benchmarks.md, "Eleventh session").
PAGE_CACHE_SLACK = 512 << 20
PAGE_CACHE_SHARE = 0.04


@dataclass
class StreamPlan:
    """The streaming part of a plan, with its expected figures."""

    cache_bytes: int  # RAM for the expert cache
    slots: int  # experts a streamed layer holds
    layers: int  # streamed layers (routed experts in RAM)
    hit_rate: float  # expected share of selections found in RAM (skewed routing)
    hit_rate_uniform: float  # the same with uniform routing
    ssd_bytes_per_token: float  # expected, skewed routing
    ssd_bytes_per_token_uniform: float
    page_faults: bool = False  # no cache: the experts come in by page faults, one at a time

    def describe(self) -> str:
        return (f"streaming from the SSD: a {self.cache_bytes / 2**30:.1f} GiB RAM cache of "
                f"{self.slots} experts in each of {self.layers} layers; about "
                f"{self.hit_rate:.0%} of the experts a token needs are expected in RAM "
                f"({self.hit_rate_uniform:.0%} if routing were uniform), "
                f"{self.ssd_bytes_per_token / 1e9:.2f} GB read from the SSD per token")


def skew_share(fraction: float, profile: list[list[int]] | None = None,
               layers: list[int] | None = None, n_expert_used: int = 1) -> float:
    """Share of selections the most chosen ``fraction`` of each layer's experts take on new
    tokens: estimated from a routing ``profile`` (counts [layer][expert]; the middle of its
    range) when given, else typical skewed routing's."""
    fraction = min(max(fraction, 0.0), 1.0)
    if profile and layers:
        n_expert = max(map(len, profile))
        estimate = profile_hit_rate(profile, layers, round(fraction * n_expert), n_expert_used)
        if estimate is not None:
            return estimate.mid
    return top_share(fraction)


def expected_hit_rate(fraction: float, profile: list[list[int]] | None = None,
                      layers: list[int] | None = None, n_expert_used: int = 1) -> float:
    """Share of selections a cache holding ``fraction`` of each layer's experts (at least one
    token's) serves: the repeats of the token before, and of the rest the skew's share."""
    if fraction <= 0:
        return 0.0
    return lru_hit_rate(skew_share(fraction, profile, layers, n_expert_used))


def stream_plan(model: GGUFModel, layers: list[int], ram_budget: int, resident: int,
                non_expert_weights: int, n_expert_used: int,
                profile: list[list[int]] | None = None) -> StreamPlan | None:
    """The expert cache for ``layers`` (their routed experts in RAM) within ``ram_budget``
    bytes, after ``resident`` bytes (KV cache, buffers) and the ``non_expert_weights`` in RAM;
    None when it would not hold one token's experts a layer."""
    per_expert = model.expert_bytes(layers)
    if not layers or per_expert <= 0:
        return None
    slack = max(PAGE_CACHE_SLACK, int(ram_budget * PAGE_CACHE_SHARE))
    room = ram_budget - resident - non_expert_weights - slack
    slots = min(model.n_expert, max(0, room) // (per_expert * len(layers)))
    if slots < n_expert_used:
        return None
    fraction = slots / model.n_expert
    hit = expected_hit_rate(fraction, profile, layers, n_expert_used)
    per_token = len(layers) * n_expert_used * per_expert
    return StreamPlan(cache_bytes=slots * per_expert * len(layers), slots=slots, layers=len(layers),
                      hit_rate=hit, hit_rate_uniform=fraction,
                      ssd_bytes_per_token=(1 - hit) * per_token,
                      ssd_bytes_per_token_uniform=(1 - fraction) * per_token)


def page_fault_plan(model: GGUFModel, layers: list[int], n_expert_used: int) -> StreamPlan:
    """No room for a RAM cache: every routed expert a token needs is read by page faults (the
    page cache's share is left out: with so little memory it holds little)."""
    per_token = float(len(layers) * n_expert_used * model.expert_bytes(layers))
    return StreamPlan(cache_bytes=0, slots=0, layers=len(layers), hit_rate=0.0, hit_rate_uniform=0.0,
                      ssd_bytes_per_token=per_token, ssd_bytes_per_token_uniform=per_token,
                      page_faults=True)


def with_stream(placement: PlacementPlan, stream: StreamPlan) -> PlacementPlan:
    """``placement`` streaming its experts through ``stream``'s cache (weights left in the file)."""
    return replace(placement, expert_stream="cache", expert_stream_bytes=stream.cache_bytes,
                   repack=False)


def streaming_decode(seconds_in_ram: tuple[float, float], stream: StreamPlan,
                     disk: DiskSpeed | None) -> tuple[float, float] | None:
    """Decode t/s (low, high) when each token also waits for its SSD reads: ``seconds_in_ram``
    is a token's time with every expert in RAM (slow end, fast end). The slow end takes the
    uniform routing's reads, the fast end the skewed one's; None without a disk figure."""
    rate = read_rate(stream, disk)
    if rate <= 0:
        return None
    slow = seconds_in_ram[0] + stream.ssd_bytes_per_token_uniform / rate
    fast = seconds_in_ram[1] + stream.ssd_bytes_per_token / rate
    return 1 / slow, 1 / fast


def read_rate(stream: StreamPlan, disk: DiskSpeed | None) -> float:
    """Bytes/s the plan's SSD reads run at: the probe's expert-sized reads at depth (the
    engine's parallel reads), or one at a time (page faults)."""
    if disk is None:
        return 0.0
    return disk.random_read_bw_1 if stream.page_faults else disk.random_read_bw
