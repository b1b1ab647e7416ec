"""How skewed and how local a model's routing is, measured in llama.cpp by the routing telemetry.

Two figures per MoE layer, the ones a hot-expert cache lives on and that published measurements
of real models report (Qwen3-30B-A3B, Qwen3-235B-A22B: about 0.60 and 0.45):

- top-quarter share: the share of the layer's selections taken by its most-chosen 25% of
  experts (0.25 if perfectly even; over a short window chance alone reads higher, ~0.36 for
  128 tokens of top-8 of 128);
- repeat share: the share of a token's k selections that the token before had made too
  (k/n_expert by chance, 0.0625 for top-8 of 128).

Usage, around the tokens to measure (capture on with ``ggml_backend.routing_enable``)::

    before = routing_counters(ctx, n_layer, n_expert)
    ...decode...
    stats = routing_stats(routing_counters(ctx, n_layer, n_expert) - before, n_expert_used)

Snapshots of several runs add up (``a + b``) to pool their counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.engine import ggml_backend


class RoutingTelemetryError(RuntimeError):
    """The engine cannot report routing: a build without the patch, or capture not enabled."""


@dataclass(frozen=True)
class RoutingCounters:
    """Cumulative routing counters of a context at one moment."""

    tokens: int
    counts: np.ndarray  # [layer][expert] selections
    repeats: np.ndarray  # [layer] selections the row before had made too
    rows: np.ndarray  # [layer] rows compared with the row before

    def __sub__(self, other: RoutingCounters) -> RoutingCounters:
        return RoutingCounters(self.tokens - other.tokens, self.counts - other.counts,
                               self.repeats - other.repeats, self.rows - other.rows)  # fmt: skip

    def __add__(self, other: RoutingCounters) -> RoutingCounters:
        return RoutingCounters(self.tokens + other.tokens, self.counts + other.counts,
                               self.repeats + other.repeats, self.rows + other.rows)  # fmt: skip


@dataclass(frozen=True)
class RoutingStats:
    """Per-layer skew and locality of the routing counted in a snapshot (nan: layer not run)."""

    tokens: int
    top_quarter_share: list[float]
    repeat_share: list[float]

    @property
    def mean_top_quarter_share(self) -> float:
        return float(np.nanmean(self.top_quarter_share))

    @property
    def mean_repeat_share(self) -> float:
        return float(np.nanmean(self.repeat_share))

    def describe(self) -> str:
        """One line, e.g. 'top-25% share 0.61 (0.57-0.66), repeat share 0.42 (0.38-0.45)'."""

        def spread(values: list[float]) -> str:
            return f"{np.nanmean(values):.2f} ({np.nanmin(values):.2f}-{np.nanmax(values):.2f})"

        return (f"top-25% share {spread(self.top_quarter_share)}, "
                f"repeat share {spread(self.repeat_share)} over {self.tokens} tokens")  # fmt: skip


def top_quarter_share(counts: np.ndarray) -> float:
    """Share of the selections in ``counts`` (one layer's, per expert) that its most-chosen
    quarter of experts took; nan if there are none."""
    total = counts.sum()
    if total == 0:
        return float("nan")
    quarter = max(1, len(counts) // 4)
    return float(np.sort(counts)[-quarter:].sum() / total)


def routing_counters(ctx: int, n_layer: int, n_expert: int) -> RoutingCounters:
    """The context's routing counters now. Needs the engine's routing telemetry with repeat
    counts (patch 0004) and capture enabled on ``ctx``."""
    if not ggml_backend.has_cache_patch():
        raise RoutingTelemetryError(
            "this llama.cpp build has no routing repeat counts (engine patch 0004): "
            "rebuild the engine with installers/install.py"
        )
    tokens, counts = ggml_backend.routing_counts(ctx, n_layer, n_expert)
    repeats = ggml_backend.routing_repeats(ctx, n_layer)
    if tokens < 0 or repeats is None:
        raise RoutingTelemetryError(
            "routing capture is off for this context: call ggml_backend.routing_enable first"
        )
    return RoutingCounters(tokens, np.array(counts, dtype=np.int64).reshape(n_layer, n_expert),
                           np.array(repeats[0], dtype=np.int64),
                           np.array(repeats[1], dtype=np.int64))  # fmt: skip


def routing_stats(snapshot: RoutingCounters, n_expert_used: int) -> RoutingStats:
    """Per-layer top-quarter share and repeat share of the routing counted in ``snapshot``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        repeat = snapshot.repeats / (snapshot.rows * n_expert_used)
    return RoutingStats(
        tokens=snapshot.tokens,
        top_quarter_share=[top_quarter_share(layer) for layer in snapshot.counts],
        repeat_share=[float(x) if np.isfinite(x) else float("nan") for x in repeat],
    )
