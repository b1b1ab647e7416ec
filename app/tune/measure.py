"""Short real runs of a placement through the engine: prefill and decode t/s, and whether the
load stayed inside a VRAM budget by what llama.cpp really allocated."""

from __future__ import annotations

import itertools
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path

from app.advisor.expert_cache import HitRate, predicted_hit_rate
from app.engine.client import EngineClient
from app.engine.placement import CPU_DEVICE, PlacementPlan
from app.engine.protocol import (
    ChatMessage,
    ChatParams,
    ExpertCacheStats,
    LoadParams,
    LoadResult,
    Sampling,
    StorageStats,
)
from app.errors import EngineError

# Words the synthetic and real tokenizers both split into a token or two each.
_WORDS = ("expert", "router", "layer", "token", "memory", "cache", "offload", "decode")


class TuneCancelled(Exception):
    """The user stopped a tuning or benchmark run."""


@dataclass
class Workload:
    """What one measurement runs: prefill of each prompt length, then ``decode_tokens`` after a
    short prompt and, with ``decode_depth``, again after a prompt of that many tokens (decode
    deep in a long context, where the KV cache's place starts to matter, llama-bench's ``-d``)."""

    prefill_tokens: tuple[int, ...] = (512,)
    decode_tokens: int = 64
    repeats: int = 1  # runs of each; the median counts (single runs scatter by 10-20% on a GPU)
    decode_depth: int = 0  # 0: no deep decode

    def context_needed(self) -> int:
        """Tokens of context the longest run takes, with room for the chat template."""
        longest = max((*self.prefill_tokens, self.decode_depth + self.decode_tokens, 16 + self.decode_tokens))
        return longest + 64


@dataclass
class Measurement:
    """One placement measured: its speeds, and what it took on the GPU(s)."""

    label: str
    plan: PlacementPlan
    gpu_bytes: int = 0  # llama.cpp's own allocations on GPUs: weights, KV cache, compute
    gpu_by_kind: dict[str, int] = field(default_factory=dict)  # "weights", "kv_cache", ... -> bytes
    ram_bytes: int = 0
    fits: bool = True  # gpu_bytes within the budget
    prefill_tps: dict[int, float] = field(default_factory=dict)  # prompt tokens -> t/s
    decode_tps: float = 0.0
    deep_decode_tps: float = 0.0  # decode after ``decode_depth`` tokens (0: not measured)
    decode_depth: int = 0
    load_seconds: float = 0.0
    error: str | None = None  # why it could not be measured (out of memory, over budget...)
    runs: int = 1  # loads whose figures these are the medians of (app.tune.rounds)
    decode_range: tuple[float, float] | None = None  # lowest and highest of those runs
    deep_decode_range: tuple[float, float] | None = None
    # a model larger than RAM: what its decode runs read from the SSD (None: not counted)
    ssd_bytes_per_token: float | None = None
    ssd_read_bps: float | None = None  # bytes/s over those runs' decode steps
    ram_hit_rate: float | None = None  # the stream's RAM expert cache, when it has one
    # hot experts in VRAM: the share of the cached layers' selections they served over the
    # decode runs, and the advisor's prediction from the profile that ranked them (None: no cache)
    vram_hit_rate: float | None = None
    predicted_hit_rate: HitRate | None = None
    note: str = ""  # what the run did not do as asked (a cache the engine could not set up)

    @property
    def ok(self) -> bool:
        return self.error is None and self.fits

    def summary(self) -> str:
        """One line: the speeds, or why there are none."""
        if not self.ok:
            return f"not measured: {self.error}"
        deep = f" ({self.deep_decode_tps:.1f} at depth {self.decode_depth})" if self.decode_depth else ""
        ssd = ""
        if self.ssd_bytes_per_token:
            hits = "" if self.ram_hit_rate is None else f", RAM expert cache {self.ram_hit_rate:.0%} hits"
            ssd = (f", SSD {self.ssd_bytes_per_token / 1e9:.2f} GB/token at "
                   f"{(self.ssd_read_bps or 0) / 1e9:.2f} GB/s{hits}")
        hot = ""
        if self.vram_hit_rate is not None:
            predicted = f" (predicted {self.predicted_hit_rate})" if self.predicted_hit_rate else ""
            hot = f", hot experts in VRAM {self.vram_hit_rate:.0%} hits{predicted}"
        return (f"decode {self.decode_tps:.1f} t/s{deep}, prefill {self.prefill:.0f} t/s, "
                f"GPU {self.gpu_bytes / 1e9:.1f} GB{ssd}{hot}")

    @property
    def decode(self) -> float:
        """The decode figure that ranks placements: deep in the context when that was
        measured (a long chat is where placements differ most), else after a short prompt."""
        return self.deep_decode_tps if self.decode_depth else self.decode_tps

    @property
    def decode_spread(self) -> tuple[float, float] | None:
        """Lowest and highest of ``decode`` over the runs it is the median of (None: one run)."""
        return self.deep_decode_range if self.decode_depth else self.decode_range

    @property
    def prefill(self) -> float:
        """Prefill t/s of the shortest prompt measured (0 when none)."""
        return self.prefill_tps[min(self.prefill_tps)] if self.prefill_tps else 0.0


def allocated_bytes(result: LoadResult) -> tuple[int, int]:
    """(GPU bytes, host bytes) llama.cpp reported allocating for a load."""
    gpu = sum(a.bytes for a in result.allocations if a.device != CPU_DEVICE)
    host = sum(a.bytes for a in result.allocations if a.device == CPU_DEVICE)
    return gpu, host


def gpu_bytes_by_kind(result: LoadResult) -> dict[str, int]:
    """GPU bytes per kind of buffer (weights, kv_cache, compute, ...) llama.cpp allocated."""
    kinds: dict[str, int] = {}
    for a in result.allocations:
        if a.device != CPU_DEVICE:
            kinds[a.kind] = kinds.get(a.kind, 0) + a.bytes
    return kinds


class Measurer:
    """Measures placements of one model on one engine; reuses the engine between loads."""

    def __init__(self, client: EngineClient, model: Path, *, gpu_budget: int | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.client = client
        self.model = Path(model)
        self.gpu_budget = gpu_budget  # usable bytes; None: no limit
        self.cancel = cancel or threading.Event()
        self._tokens_per_word: float | None = None
        self._nonce = itertools.count()

    def measure(self, label: str, plan: PlacementPlan, workload: Workload) -> Measurement:
        """Load ``plan``, check its GPU allocations against the budget, then run ``workload``."""
        result = Measurement(label, plan)
        self._check_cancel()
        if workload.context_needed() > plan.n_ctx:
            result.error = (f"this measurement needs a context of more than "
                            f"{workload.context_needed()} tokens; the placement has {plan.n_ctx}")
            return result
        try:
            loaded = self.client.load(LoadParams(model=str(self.model), placement=plan, telemetry=False))
        except EngineError as exc:
            result.error = exc.message
            return result
        result.gpu_bytes, result.ram_bytes = allocated_bytes(loaded)
        result.gpu_by_kind = gpu_bytes_by_kind(loaded)
        result.load_seconds = loaded.load_seconds
        cache = loaded.expert_cache
        if cache is not None and cache.available:
            result.predicted_hit_rate = predicted_hit_rate(
                cache.slots, loaded.model.n_expert, loaded.model.n_expert_used, cache.profile, cache.layers,
                cache.mode, cache.copy_policy or "thrifty", plan.expert_cache_uploads)
        elif cache is not None:
            result.note = f"hot experts in VRAM unavailable: {cache.reason}"
        if self.gpu_budget is not None and result.gpu_bytes > self.gpu_budget:
            result.fits = False
            result.error = (f"needs {result.gpu_bytes / 1e9:.1f} GB on the GPU, over the "
                            f"{self.gpu_budget / 1e9:.1f} GB budget")
            return result
        try:
            # warm-up: first-use allocations and caches, on the prompt path too. A prompt of 32+
            # tokens takes another path than decoding (op offload copies RAM experts to the GPU,
            # batched kernels); warmed with 8 tokens, the first measured prompt paid for it, and
            # with 2 repeats the same plan measured 437 and 516 t/s in one H100 run
            self._generate(min(workload.prefill_tokens, default=64), 4)
            runs = range(max(1, workload.repeats))
            for n in workload.prefill_tokens:
                result.prefill_tps[n] = statistics.median(self._generate(n, 1).prefill_tps for _ in runs)
            if workload.decode_tokens:
                before = self.client.stats()
                result.decode_tps = statistics.median(
                    self._generate(16, workload.decode_tokens).decode_tps for _ in runs)
                after = self.client.stats()
                self._storage(result, before.storage, after.storage)
                result.vram_hit_rate = self._cache_hits(before.expert_cache, after.expert_cache)
            if workload.decode_tokens and workload.decode_depth:
                context = self._context(workload.decode_depth)  # prefilled once, then cached
                result.decode_depth = workload.decode_depth
                result.deep_decode_tps = statistics.median(
                    self._generate(0, workload.decode_tokens, context).decode_tps for _ in runs)
        except EngineError as exc:
            result.error = exc.message
        return result

    @staticmethod
    def _storage(result: Measurement, before: StorageStats | None, after: StorageStats | None) -> None:
        """What the decode runs between the two stats read from the SSD."""
        if before is None or after is None:
            return
        tokens = after.total_tokens - before.total_tokens
        read = after.total_bytes - before.total_bytes
        if tokens <= 0:
            return
        result.ssd_bytes_per_token = read / tokens
        result.ram_hit_rate = after.ram_hit_rate
        if read and result.decode_tps > 0:
            result.ssd_read_bps = result.ssd_bytes_per_token * result.decode_tps

    @staticmethod
    def _cache_hits(before: ExpertCacheStats | None, after: ExpertCacheStats | None) -> float | None:
        """The hot-expert cache's hit rate over the decode runs between the two stats."""
        if before is None or after is None:
            return None
        return ExpertCacheStats(after.hits - before.hits, after.misses - before.misses, 0).hit_rate

    def _generate(self, prompt_tokens: int, new_tokens: int, context: str = ""):  # -> ChatResult
        """``context`` (the same each time) goes before the fresh part of the prompt, so the
        engine reuses its K/V and prefills only what follows."""
        self._check_cancel()
        stream = self.client.chat(ChatParams(
            messages=[ChatMessage("user", context + self._prompt(prompt_tokens))],
            sampling=Sampling(temperature=0.0, max_tokens=new_tokens, ignore_eos=True, seed=1)))
        for _token in stream:
            if self.cancel.is_set():
                stream.cancel()
        if self.cancel.is_set():
            raise TuneCancelled()
        return stream.result

    def _prompt(self, n_tokens: int) -> str:
        """A prompt of about ``n_tokens`` tokens, new each time (a fresh first word), so the
        engine's prompt cache cannot skip the prefill being measured."""
        words = self._word_count(n_tokens)
        return f"run{next(self._nonce)} " + " ".join(_WORDS[(i * 7) % len(_WORDS)] for i in range(words))

    def _context(self, n_tokens: int) -> str:
        """A fixed text of about ``n_tokens`` tokens."""
        words = self._word_count(n_tokens)
        return " ".join(_WORDS[(i * 5) % len(_WORDS)] for i in range(words)) + "\n"

    def _word_count(self, n_tokens: int) -> int:
        if self._tokens_per_word is None:
            self._tokens_per_word = self._calibrate()
        return max(1, round(n_tokens / self._tokens_per_word))

    def _calibrate(self) -> float:
        """Tokens per word of this model's tokenizer, from one short real prompt."""
        self._tokens_per_word = 1.0
        base = self._generate(1, 1).prompt_tokens
        longer = self._generate(201, 1).prompt_tokens
        return max((longer - base) / 200, 0.1)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise TuneCancelled()
