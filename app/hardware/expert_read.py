"""How fast llama.cpp's own CPU kernels read routed experts on this machine, as measured by
decoding (app/tune/expert_read_probe.py), kept beside the RAM probe in the probes' cache file.

Decode with experts in RAM is bound by how fast the CPU's matrix-vector kernels stream them. The
speed model estimated that from the numpy RAM probe times shares fitted over four hosts, but the
probe does not follow the kernels from host to host (issue 19: the sixteenth session's H100 host
probed 1.3x faster than the fourteenth's and decoded alike; the twentieth session's probed
0.7-0.9x the nineteenth's and decoded 1.15x faster). The kernel probe measures the figure itself:
the bytes of one routed expert over the time a decoded token spends on it, with the threads the
engine decodes with, the experts in the file's layout (as llama.cpp keeps experts in RAM beside a
GPU, in its host buffer). The speed model reads every CPU weight in that layout at it: on the
dev machine (2 cores, no GPU, repacking off) that put four families' decodes within 1-3% and
gpt-oss's within 24%, where the RAM probe's estimate was 48-52% fast. It is not used for
weights repacked for the CPU, whose dense matrices stream 3x faster there than in the file's
layout (docs/benchmarks.md, "the kernel probe"). Other types' kernels run at other rates (Q6_K's
1.4x the bytes a second of Q4_0's, the i-quants' about half on the dev machine: "Kernel rate by
type"): a model's own expert types are timed the same way when it is tuned here. Larger experts
stream faster a byte: each expert a token reads costs a time of its own beside its bytes, which
the probe separates with a model of wider experts (``expert_seconds``; ``rate_for`` gives the
rate at a model's expert size, and dense matrices stream at the rate past that cost).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import gguf

from app.hardware.probe_cache import cache_path, cpu_key, read_cache, write_cache

CACHE_KEY = "expert_read"
# 2: the probe also times wider experts (a cost per expert beside its bytes); a rate measured
# without it reads larger experts than the probe's too slow, so it is measured again
PROBE_VERSION = 2


@dataclass(frozen=True)
class ExpertReadRate:
    """One measurement of the CPU kernels' read rate for routed experts."""

    bytes_per_s: float  # an expert's bytes over a decoded token's time on it
    threads: int  # the CPU threads it decoded with
    quant: str  # the experts' type (the rate depends on its dot-product kernel)
    cpu: str = ""  # the machine it was measured on (probe_cache.cpu_key)
    version: int = PROBE_VERSION
    # other types' rates against this one's, measured here the same way (the experts of the
    # models tuned here; app/advisor/device_rates.py's CPU_KERNEL_RATE stands in for the rest)
    type_speeds: dict[str, float] = field(default_factory=dict)
    # the probe's experts' size (weights), and what each expert a token reads costs beside its
    # bytes (seconds; 0: not separated): a token's time on an expert of S bytes is
    # expert_seconds + S / (the rate past it), so larger experts stream faster
    expert_weights: int = 0
    expert_seconds: float = 0.0

    def rate_for(self, expert_weights: int) -> float:
        """Bytes/s for experts of ``expert_weights`` weights (0: the probe's own size)."""
        if expert_weights <= 0 or self.expert_weights <= 0 or self.expert_seconds <= 0:
            return self.bytes_per_s
        block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[self.quant]]
        probe_bytes = self.expert_weights * block_bytes / block  # the probe's expert
        per_byte = (probe_bytes / self.bytes_per_s - self.expert_seconds) / probe_bytes
        if per_byte <= 0:  # damaged: the per-expert cost is the whole time
            return self.bytes_per_s
        n_bytes = probe_bytes * expert_weights / self.expert_weights
        return n_bytes / (self.expert_seconds + per_byte * n_bytes)

    def describe(self) -> str:
        types = "".join(f", {q} {speed:.2f}x" for q, speed in sorted(self.type_speeds.items()))
        size = (f" ({self.expert_seconds * 1e6:.0f} us an expert beside its bytes: "
                f"{self.rate_for(4 * self.expert_weights) / 1e9:.1f} GB/s for experts 4x as large)"
                if self.expert_seconds > 0 else "")
        return (f"llama.cpp's CPU kernels read routed experts ({self.quant}, in the file's layout) at "
                f"{self.bytes_per_s / 1e9:.1f} GB/s{size} with {self.threads} threads (measured by decoding"
                f"{types})")


def cached_expert_read(cache: Path | None = None) -> ExpertReadRate | None:
    """This machine's measurement, if one was made here (None: never, elsewhere, or an older
    version's)."""
    entry = read_cache(cache_path(cache)).get(CACHE_KEY)
    if not isinstance(entry, dict) or entry.get("cpu") != cpu_key() or entry.get("version") != PROBE_VERSION:
        return None
    try:
        rate = ExpertReadRate(**entry)
    except TypeError:
        return None
    numbers = (isinstance(rate.bytes_per_s, (int, float)) and isinstance(rate.threads, int)
               and isinstance(rate.expert_weights, int) and isinstance(rate.expert_seconds, (int, float))
               and rate.expert_weights >= 0 and rate.expert_seconds >= 0)
    speeds = isinstance(rate.type_speeds, dict) and all(
        isinstance(v, (int, float)) and v > 0 for v in rate.type_speeds.values())
    return rate if numbers and speeds and rate.bytes_per_s > 0 and rate.threads > 0 else None  # else damaged


def record_expert_read(rate: ExpertReadRate, cache: Path | None = None) -> None:
    """Keep ``rate`` as this machine's (replacing any before it)."""
    if rate.bytes_per_s <= 0 or rate.threads <= 0:
        raise ValueError("a read rate needs positive bytes/s and threads")
    path = cache_path(cache)
    data = read_cache(path)
    data[CACHE_KEY] = asdict(rate)
    write_cache(path, data)
