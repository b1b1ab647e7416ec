"""Realistic routing for synthetic MoE models: skewed per layer and local from token to token.

Real MoE routers are neither uniform nor a fixed hot set. Published measurements of Qwen3-30B-A3B
and Qwen3-235B-A22B (128 experts, top-8) show, per layer, the most-chosen 25% of experts taking
about 60% of the selections (a graded skew, not a handful of hot experts), and strong temporal
locality while decoding: about 45% of a token's selections repeat on the next token (median
reuse distance 2 tokens), where that skew alone would repeat only ~10% by chance. A hot-expert
cache lives on both, so benchmarks of one need models that route this way.

How (``routing="realistic"``): the hidden state carries, next to the routing channel, a block of
*signature* dims that no attention or expert matrix reads or writes (see synthetic_weights.
_close_channel). Each learned token v sits at position p(v) on a ring (a random permutation of
the vocabulary's normal tokens); its embedding holds the position code s(p): cos and sin of
p*w_i over SIGNATURE_FREQS frequencies from low to high. The output head row of v reads
s(p(v)-1), and the code's kernel s(p).s(q) peaks sharply at p = q, so greedy (and moderate
temperature) decoding walks the ring one step per token. Each layer's router reads

    logit_e = bias_e + locality * slow_e(p) + noise * (random projection of the hidden state)

where bias_e is drawn per layer (the graded skew, through the routing channel), slow_e is a
random projection of only the LOW frequencies of the code (consecutive tokens share experts;
the frequencies set how fast routing drifts), and the last term is the router's ordinary random
view of the rest of the hidden state (what changes from token to token). The constants of
REALISTIC were calibrated in numpy, then checked in llama.cpp through the engine's routing
telemetry (app.engine.routing_stats); tests/test_synthetic.py asserts the measured figures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import gguf
import numpy as np

from app.synthetic.spec import _CHANNEL_DIMS, SIGNATURE_DIMS, Q, SyntheticSpec
from app.synthetic.tokenizer import build_vocab

SIGNATURE_FREQS = SIGNATURE_DIMS // 2  # cos and sin of each
SEED_RING, SEED_FREQS, SEED_BIAS, SEED_SLOW = 0x72696E67, 0x66726571, 0x62696173, 0x736C6F77


@dataclass(frozen=True)
class RealisticRouting:
    """The logit scales of realistic routing, in units of the router's random-noise term.

    Calibrated in numpy (logits = bias + locality*slow(p) + noise*n, top-8 of 128, a walk along
    the ring): long-run top-25% share 0.56, repeat share 0.40, median reuse distance 2 tokens.
    In llama.cpp the hidden state's own noise is a little smoother from token to token, and a
    128-token window is more concentrated than the long run (finite counts plus locality).
    Measured by the routing telemetry, greedy decoding, 4 layers, per 128 tokens / pooled over
    2-4 prompts: Qwen3-30B-A3B shape 0.70 / 0.64 top-25% share, 0.42 repeat share; tiny-realistic
    0.70 / 0.64, 0.41. Uniform routing: 0.06 repeat share (chance 0.0625).
    """

    bias_spread: float = 0.8  # std of the per-expert bias drawn per layer: the skew
    locality: float = 1.35  # std of the slowly varying term: shared by neighbouring tokens
    noise: float = 1.0  # std of the term that is new with every token
    slow_freqs: int = 16  # how many of the code's frequencies the router reads ...
    drift: tuple[float, float] = (0.01, 0.5)  # ... log-spaced over these radians per token
    # logit the successor on the ring gains over a random token (random logits spread ~3)
    successor_logit: float = 30.0


REALISTIC = RealisticRouting()


@functools.lru_cache(maxsize=4)
def ring_positions(n_vocab: int, seed: int) -> tuple[np.ndarray, int]:
    """(p(v) for every token, ring length M). Normal tokens hold positions 0..M-1 in a random
    order; special and unused tokens are not on the ring (nothing steps to them) but still get a
    random position, so a prompt holding them routes like any other."""
    rng = np.random.default_rng([seed, SEED_RING])
    on_ring = np.flatnonzero(np.array(build_vocab(n_vocab).token_types) == gguf.TokenType.NORMAL)
    positions = rng.integers(0, len(on_ring), n_vocab)
    positions[rng.permutation(on_ring)] = np.arange(len(on_ring))
    return positions, len(on_ring)


def on_ring(n_vocab: int) -> np.ndarray:
    """Per token: whether it is on the ring (whether a step of the walk can land on it)."""
    return np.array(build_vocab(n_vocab).token_types) == gguf.TokenType.NORMAL


@functools.lru_cache(maxsize=4)
def _frequencies(seed: int, routing: RealisticRouting) -> np.ndarray:
    """The code's frequencies (radians per ring step): first the router's slow ones, log-spaced
    over ``routing.drift``, then random ones up to pi that make the kernel sharp."""
    lo, hi = routing.drift
    slow = np.geomspace(lo, hi, routing.slow_freqs)
    fast = np.random.default_rng([seed, SEED_FREQS]).uniform(
        hi, math.pi, SIGNATURE_FREQS - routing.slow_freqs
    )
    return np.concatenate([slow, fast])


def signature(positions: np.ndarray, seed: int, routing: RealisticRouting = REALISTIC) -> np.ndarray:
    """The position code of each position, (n, SIGNATURE_DIMS): sqrt(2)*cos of every frequency,
    then sqrt(2)*sin, so that each dim has an RMS of 1 like the rest of the embedding."""
    phase = np.outer(positions, _frequencies(seed, routing))
    return (math.sqrt(2) * np.concatenate([np.cos(phase), np.sin(phase)], axis=1)).astype(np.float32)


def _sig_slice() -> slice:
    return slice(_CHANNEL_DIMS, _CHANNEL_DIMS + SIGNATURE_DIMS)


def embedding_rows(spec: SyntheticSpec, row0: int, data: np.ndarray) -> None:
    """Write each token's position code into its embedding row (``data``: rows from row0)."""
    positions, _ = ring_positions(spec.n_vocab, spec.seed)
    data[:, _sig_slice()] = signature(positions[row0 : row0 + len(data)], spec.seed)


def head_rows(spec: SyntheticSpec, qtype: Q, row0: int, rows: np.ndarray) -> None:
    """Make the output row of each ring token read the code of its predecessor on the ring.

    ``rows``: (rows, 32-value blocks, values or block bytes) of the output matrix from row0,
    signature blocks zero. The final hidden state holds s(p)/rms(x) there; rms(x) is about
    sqrt(1 + ordinary share) (the residual branches double the ordinary dims' variance by the
    last layer), and s(p).s(q) = 2 * sum_i cos(w_i (p - q)), so this gain makes the successor's
    logit ``successor_logit`` higher than its kernel-free value.
    """
    positions, ring = ring_positions(spec.n_vocab, spec.seed)
    chosen = on_ring(spec.n_vocab)[row0 : row0 + len(rows)]
    if not chosen.any():
        return
    ordinary = (spec.n_embd - spec.closed_dims) / spec.n_embd
    gain = REALISTIC.successor_logit * math.sqrt(1 + ordinary) / SIGNATURE_DIMS
    before = (positions[row0 : row0 + len(rows)][chosen] - 1) % ring
    values = gain * signature(before, spec.seed)
    first = _CHANNEL_DIMS // 32
    rows[chosen, first : first + SIGNATURE_DIMS // 32] = quantize_blocks(values, qtype)


def quantize_blocks(values: np.ndarray, qtype: Q) -> np.ndarray:
    """(n, 32*m) floats as (n, m, block) values (F16) or block bytes (Q4_0, Q8_0)."""
    blocks = values.reshape(len(values), -1, 32).astype(np.float32)
    if qtype == Q.F16:
        return blocks.astype(np.float16)
    top = 127 if qtype == Q.Q8_0 else 7
    scale = np.abs(blocks).max(axis=2, keepdims=True) / top
    scale = scale.astype(np.float16)
    safe = np.where(scale == 0, 1, scale).astype(np.float32)
    levels = np.clip(np.rint(blocks / safe), -top, top)
    scale_bytes = scale.view(np.uint8)  # (n, m, 2)
    if qtype == Q.Q8_0:
        return np.concatenate([scale_bytes, levels.astype(np.int8).view(np.uint8)], axis=2)
    nibbles = (levels + 8).astype(np.uint8)  # Q4_0: byte i holds values i and i+16
    return np.concatenate([scale_bytes, nibbles[..., :16] | (nibbles[..., 16:] << 4)], axis=2)


def router_rows(spec: SyntheticSpec, layer: int, w: np.ndarray, pattern: np.ndarray) -> None:
    """Turn random router rows ``w`` (n_expert, n_embd; RMS 1/sqrt(n_embd), channel dims zero)
    into realistic ones: a per-expert bias through the routing channel (``pattern``: its ±1
    values), a random view of the code's slow frequencies, and the random rest scaled to
    ``noise``. Adds to the channel, so routing_skew's hot experts still come on top."""
    r = REALISTIC
    closed = spec.closed_dims
    bias = np.random.default_rng([spec.seed, SEED_BIAS, layer]).standard_normal(spec.n_expert)
    w[:, :_CHANNEL_DIMS] += (r.bias_spread * bias / _CHANNEL_DIMS)[:, None] * pattern
    slow = np.random.default_rng([spec.seed, SEED_SLOW, layer]).standard_normal(
        (spec.n_expert, 2, r.slow_freqs)
    )
    # the normed code has RMS 1 per dim: sum over 2*slow_freqs dims of (weight * value) has
    # variance locality^2 with these weights
    sig = np.zeros((spec.n_expert, 2, SIGNATURE_FREQS), dtype=np.float32)
    sig[:, :, : r.slow_freqs] = r.locality * slow / math.sqrt(2 * r.slow_freqs)
    w[:, _sig_slice()] = sig.reshape(spec.n_expert, SIGNATURE_DIMS)
    w[:, closed:] *= r.noise * math.sqrt(spec.n_embd / (spec.n_embd - closed))
