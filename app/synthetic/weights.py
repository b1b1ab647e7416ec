"""The random but valid weights of a synthetic MoE model, chunk by chunk.

Quantized matrices are random blocks of their type (no float quantization); the router rows and a
fixed "routing channel" in the hidden state make routing skew real (see _router); realistic
routing adds a position code next to it (see app/synthetic/routing.py).
"""

from __future__ import annotations

import functools
import math

import gguf
import numpy as np

from app.synthetic import routing as synthetic_routing
from app.synthetic.spec import _CHANNEL_DIMS, Q, SyntheticSpec, TensorPlan
from app.synthetic.tokenizer import build_vocab

# RMS of the integer levels of a random block: nibble-8 over 0..15, int8 over -128..127.
# MXFP4: ggml's levels 2*E2M1 = 0, ±1, ±2, ±3, ±4, ±6, ±8, ±12 over the 16 nibbles.
_LEVEL_RMS = {Q.Q4_0: math.sqrt(21.5), Q.Q8_0: math.sqrt(127 * 128 / 3), Q.MXFP4: math.sqrt(34.25)}
_MIN_SCALE = 2.0**-14  # smallest normal fp16: keep block scales out of the subnormal range
# The logit advantage of hot experts at routing_skew=1, in units of the router logits' spread.
_SKEW_LOGITS = 3.0
# Logit (before the final RMS norm) of unused [PADn] tokens: random output rows would otherwise
# make a 151936-token model emit mostly padding, which detokenizes to nothing.
_UNUSED_LOGIT = -16.0
SEED_HOT, SEED_CHANNEL = 0x686F74, 0x636F6D


def hot_experts(spec: SyntheticSpec) -> list[list[int]]:
    """Per layer, the experts that routing_skew favours (also stored in the file's metadata)."""
    return [
        sorted(
            int(x)
            for x in np.random.default_rng([spec.seed, SEED_HOT, layer]).choice(
                spec.n_expert, spec.n_hot, replace=False
            )
        )
        for layer in range(spec.n_layer)
    ]


def _channel_pattern(spec: SyntheticSpec) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, SEED_CHANNEL])
    return rng.choice(np.array([-1.0, 1.0], dtype=np.float32), _CHANNEL_DIMS)


def _router(spec: SyntheticSpec, layer: int, rng: np.random.Generator) -> np.ndarray:
    """Router rows that make routing_skew real, as a hidden-state feature would in a real model.

    The first dims of the hidden state are a routing channel: every token embedding holds the
    same ±1 pattern ``c`` there and no attention or expert matrix reads or writes them, so ``c``
    reaches each router unchanged but for RMS norm. Random rows, blind to the channel, give the
    logits a spread near 1; a hot expert's row holds ``k*c/|c|^2`` on the channel, which adds
    about ``k`` to its logit for every token. Realistic routing then adds its own terms.
    """
    w = rng.standard_normal((spec.n_expert, spec.n_embd), dtype=np.float32)
    w /= math.sqrt(spec.n_embd)
    w[:, : spec.closed_dims] = 0.0
    advantage = _SKEW_LOGITS * spec.routing_skew
    if advantage > 0:
        pattern = _channel_pattern(spec)
        w[hot_experts(spec)[layer], :_CHANNEL_DIMS] = advantage / _CHANNEL_DIMS * pattern
    if spec.routing == "realistic":
        synthetic_routing.router_rows(spec, layer, w, _channel_pattern(spec))
    return w


def _close_channel(spec: SyntheticSpec, t: TensorPlan, row0: int, rows: np.ndarray) -> None:
    """Zero the weights that would read or write the routing channel (see _router) and, with
    realistic routing, the position code after it (``spec.closed_dims`` in all).

    ``rows`` is (rows, 32-value blocks, values or block bytes); an all-zero block is a valid
    zero in every type.
    """
    if t.kind in ("reader", "head"):
        block = gguf.GGML_QUANT_SIZES[t.qtype][0] if t.qtype != Q.F16 else 32
        rows[:, : -(-spec.closed_dims // block)] = 0
    elif t.kind == "writer":
        out_dim = (row0 + np.arange(len(rows))) % t.shape[1]
        rows[out_dim < spec.closed_dims] = 0


@functools.lru_cache(maxsize=4)
def _unused_tokens(n_vocab: int, family: str) -> np.ndarray:
    return np.array(build_vocab(n_vocab, family).token_types) == gguf.TokenType.UNUSED


def _channel_block(spec: SyntheticSpec, qtype: Q, weight: float) -> np.ndarray:
    """The 32 weights ``weight * c`` (c: the channel pattern) as one block of ``qtype``."""
    c = _channel_pattern(spec)
    if qtype == Q.F16:
        return (weight * c).astype(np.float16)
    levels, top = (c * 127, 127) if qtype == Q.Q8_0 else (c * 7, 7)  # the extreme levels
    scale = np.frombuffer(np.float16(weight / top).tobytes(), dtype=np.uint8)
    if qtype == Q.Q8_0:
        return np.concatenate([scale, levels.astype(np.int8).view(np.uint8)])
    nibbles = (levels + 8).astype(np.uint8)  # Q4_0: byte i holds values i and i+16
    return np.concatenate([scale, nibbles[:16] | (nibbles[16:] << 4)])


def _mute_unused_tokens(spec: SyntheticSpec, t: TensorPlan, row0: int, rows: np.ndarray) -> None:
    """Give unused tokens' output rows a channel block worth _UNUSED_LOGIT (see _router)."""
    unused = _unused_tokens(spec.n_vocab, spec.tokenizer)[row0 : row0 + len(rows)]
    if unused.any():
        rows[unused, 0] = _channel_block(spec, t.qtype, _UNUSED_LOGIT / _CHANNEL_DIMS)


def _random_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.bit_generator.random_raw(-(-n // 8)).view(np.uint8)[:n]


def _f16_levels(rms: float) -> np.ndarray:
    """fp16 value of each random byte read as int8, scaled to RMS ``rms``: a lookup table
    (numpy's float16 casts are several times slower than indexing)."""
    levels = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float32)
    return (levels * (rms / _LEVEL_RMS[Q.Q8_0])).astype(np.float16)


def _random_rows(
    spec: SyntheticSpec, rng: np.random.Generator, t: TensorPlan, row0: int, n_rows: int
) -> np.ndarray:
    """Random weights of RMS ``t.rms`` as raw bytes: valid quant blocks written directly."""
    if t.qtype == Q.F16:
        values = _f16_levels(t.rms)[_random_bytes(rng, n_rows * t.shape[0])]
        rows = values.reshape(n_rows, -1, 32)
    else:
        rows = _random_quant_blocks(rng, t, n_rows)
    _close_channel(spec, t, row0, rows)
    if t.kind == "head":
        _mute_unused_tokens(spec, t, row0, rows)
        if spec.routing == "realistic":
            synthetic_routing.head_rows(spec, t.qtype, row0, rows)
    return rows.view(np.uint8).reshape(-1)


def _random_quant_blocks(rng: np.random.Generator, t: TensorPlan, n_rows: int) -> np.ndarray:
    """Random blocks of ``t.qtype`` as (rows, blocks per row, block bytes)."""
    _, size = gguf.GGML_QUANT_SIZES[t.qtype]
    raw = _random_bytes(rng, n_rows * t.row_bytes)
    if t.qtype in _SUPER_BLOCK_SCALES:
        return _random_super_blocks(raw, t).reshape(n_rows, -1, size)
    if t.qtype == Q.MXFP4:
        # one E8M0 scale byte, 2^(e-128) per level (ggml_e8m0_to_fp32_half), then 16 nibble bytes
        blocks = raw.reshape(-1, size)
        blocks[:, 0] = int(np.clip(round(math.log2(t.rms / _LEVEL_RMS[Q.MXFP4])) + 128, 1, 254))
        return blocks.reshape(n_rows, -1, size)
    if t.qtype == Q.Q8_0:
        # odd int8 levels only: symmetric around 0 and never -128, which ggml never writes
        raw |= 1
    blocks = raw.reshape(-1, size)
    scale = np.float16(max(t.rms / _LEVEL_RMS[t.qtype], _MIN_SCALE)).tobytes()
    blocks[:, 0] = scale[0]
    if t.qtype == Q.Q4_0:
        # The scale's sign bit stays random (ggml's Q4_0 scales take either sign too): Q4_0
        # levels average -0.5, and a bias shared by every weight would add one direction to
        # every token's hidden state, which all routers would follow.
        blocks[:, 1] &= 0x80
        blocks[:, 1] |= scale[1]
    else:
        blocks[:, 1] = scale[1]
    return blocks.reshape(n_rows, -1, size)


# Byte offsets of the fp16 scales of each 256-value super-block (ggml-common.h: d, then dmin
# where the type has one); their other bytes (sub-block scales, levels, grid indices) are
# valid whatever their value. IQ1_M has no such field (see _set_scales).
_SUPER_BLOCK_SCALES = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2),
                       Q.Q6_K: (208,), Q.IQ1_S: (0,), Q.IQ1_M: (), Q.IQ2_XXS: (0,), Q.IQ2_XS: (0,),
                       Q.IQ2_S: (0,), Q.IQ3_XXS: (0,), Q.IQ3_S: (0,), Q.IQ4_XS: (0,)}
_IQ1_M_SCALES = 48  # IQ1_M: qs[32], qh[16], then 4 uint16 scales whose top nibbles hold the fp16


def _set_scales(blocks: np.ndarray, qtype: Q, scale: np.float16, negative: np.ndarray | int = 0) -> None:
    """Write ``scale`` (its sign bit or'ed with ``negative``, 0x80 or 0 a block) as every fp16
    scale of each super-block in ``blocks`` (blocks, bytes)."""
    low, high = np.frombuffer(scale.tobytes(), dtype=np.uint8)
    if qtype == Q.IQ1_M:
        bits = int(low) | int(high) << 8  # nibble i of the fp16 in the top nibble of scales[i]
        for i in range(4):
            at = _IQ1_M_SCALES + 2 * i + 1
            blocks[:, at] = (blocks[:, at] & 0x0F) | ((bits >> 4 * i & 0xF) << 4)
        blocks[:, _IQ1_M_SCALES + 7] |= negative
        return
    for at in _SUPER_BLOCK_SCALES[qtype]:
        blocks[:, at] = low
        blocks[:, at + 1] = high | negative


@functools.cache
def _super_block_rms(qtype: Q) -> float:
    """RMS of the weights of random super-blocks of ``qtype`` whose fp16 scales are 1."""
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = np.random.default_rng(SEED_CHANNEL).integers(0, 256, (4096, size), dtype=np.uint8)
    _set_scales(blocks, qtype, np.float16(1.0))
    return float(np.sqrt(np.mean(np.square(gguf.quants.dequantize(blocks, qtype), dtype=np.float64))))


def _random_super_blocks(raw: np.ndarray, t: TensorPlan) -> np.ndarray:
    """``raw`` as blocks of a k- or i-quant whose weights have RMS ``t.rms``: the fp16 scales
    set, each block's sign random (d and dmin both: the block negated), so that no bias shared
    by every weight adds one direction to every hidden state (see the Q4_0 case)."""
    _, size = gguf.GGML_QUANT_SIZES[t.qtype]
    blocks = raw.reshape(-1, size)
    negative = blocks[:, size - 1] & 0x80  # a random bit of the block's own levels
    # Q5_K, Q6_K and IQ4_XS need scales under fp16's normal range for a matrix's RMS (their
    # random sub-block scales are large): fp16 subnormals convert exactly to fp32 normals
    _set_scales(blocks, t.qtype, np.float16(max(t.rms / _super_block_rms(t.qtype), 2.0**-24)), negative)
    return blocks


def _chunk(spec: SyntheticSpec, index: int, t: TensorPlan, row0: int, n_rows: int) -> np.ndarray:
    """Rows [row0, row0+n_rows) of tensor ``index`` as bytes; its own seed keeps it reproducible."""
    rng = np.random.default_rng([spec.seed, index, row0])
    if t.kind == "zeros":
        return np.zeros(n_rows * t.row_bytes, dtype=np.uint8)
    if t.kind == "norm":
        data = 1.0 + 0.02 * rng.standard_normal(t.shape[0], dtype=np.float32)
    elif t.kind == "router":
        data = _router(spec, t.layer, rng)
    elif t.kind == "embd":
        data = _f16_levels(1.0)[_random_bytes(rng, n_rows * t.shape[0])].reshape(n_rows, -1)
        data[:, :_CHANNEL_DIMS] = _channel_pattern(spec)
        if spec.routing == "realistic":
            synthetic_routing.embedding_rows(spec, row0, data)
    else:
        return _random_rows(spec, rng, t, row0, n_rows)
    return data.view(np.uint8).reshape(-1)
