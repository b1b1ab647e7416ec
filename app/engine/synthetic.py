"""Synthetic Mixture-of-Experts GGUF models that llama.cpp loads and runs.

Tests use tiny ones; benchmarks use real shapes (Qwen3-30B-A3B, Qwen3-235B-A22B) with random
weights, so that placement and speed can be measured without downloading a model. Quantized
weights are written as random but valid Q4_0/Q8_0 blocks (no float quantization), generated
chunk by chunk on all cores and streamed to disk, so a 16 GB model never sits in memory.

Usage: ``python -m app.engine.synthetic OUT.gguf --preset qwen3-30b-a3b --split 4``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from app.engine.synthetic_tokenizer import add_tokenizer, build_vocab

Q = gguf.GGMLQuantizationType  # short: the tensor plan names many types
Shape = tuple[int, ...]  # ggml order: row length (ne0) first
QUANT_TYPES = {"Q4_0": Q.Q4_0, "Q8_0": Q.Q8_0, "F16": Q.F16}
_FILE_TYPES = {
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
}
# RMS of the integer levels of a random block: nibble-8 over 0..15, int8 over -128..127.
_LEVEL_RMS = {Q.Q4_0: math.sqrt(21.5), Q.Q8_0: math.sqrt(127 * 128 / 3)}
_MIN_SCALE = 2.0**-14  # smallest normal fp16: keep block scales out of the subnormal range
# The first _CHANNEL_DIMS dims of the hidden state are the routing channel (see _router).
_CHANNEL_DIMS = 32
# The logit advantage of hot experts at routing_skew=1, in units of the router logits' spread.
_SKEW_LOGITS = 3.0
# Logit (before the final RMS norm) of unused [PADn] tokens: random output rows would otherwise
# make a 151936-token model emit mostly padding, which detokenizes to nothing.
_UNUSED_LOGIT = -16.0
# Rows per task: 4 MB wrote fastest on a 16-core machine (0.5-16 MB tried: fits the caches,
# still little Python per byte). Chunks are seeded one by one, so this also fixes the bytes.
_CHUNK_BYTES = 4 << 20
SEED_HOT, SEED_CHANNEL = 0x686F74, 0x636F6D


@dataclass(frozen=True)
class SyntheticSpec:
    """The shape and contents of a synthetic MoE model."""

    name: str = "tiny"
    arch: str = "qwen3moe"  # or "llama" (Mixtral-style MoE)
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 8
    n_head_kv: int = 2
    head_dim: int = 32
    n_expert: int = 8
    n_expert_used: int = 2
    n_ff_exp: int = 64
    n_vocab: int = 512
    n_ctx_train: int = 4096
    rope_freq_base: float = 1_000_000.0
    rms_eps: float = 1e-6
    quant: str = "Q4_0"
    routing_skew: float = 0.0  # 0: roughly uniform routing; 1: hot experts take most tokens
    split: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.arch not in ("qwen3moe", "llama"):
            problems.append(f"arch {self.arch!r} is not qwen3moe or llama")
        if self.quant not in QUANT_TYPES:
            problems.append(f"quant {self.quant!r} is not one of {', '.join(QUANT_TYPES)}")
        if not 1 <= self.n_expert_used <= self.n_expert <= 512:
            problems.append("need 1 <= n_expert_used <= n_expert <= 512")
        if self.n_layer < 1 or self.n_head % max(self.n_head_kv, 1):
            problems.append("need n_layer >= 1 and n_head a multiple of n_head_kv")
        rows = (self.n_embd, self.n_ff_exp, self.n_head * self.head_dim)
        if any(n % 32 for n in rows) or self.n_embd <= _CHANNEL_DIMS:
            problems.append("n_embd, n_ff_exp and n_head*head_dim must be multiples of 32")
        if self.routing_skew < 0 or self.seed < 0 or not 1 <= self.split <= 2 * self.n_layer:
            problems.append("need routing_skew >= 0, seed >= 0 and 1 <= split <= 2*n_layer")
        if problems:
            raise ValueError(f"invalid synthetic spec {self.name!r}: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides: object) -> SyntheticSpec:
        """A named preset (see PRESETS) with some fields replaced, e.g. ``n_layer=2``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)  # type: ignore[arg-type]

    @property
    def n_hot(self) -> int:
        """How many experts per layer routing_skew favours."""
        return min(self.n_expert, max(2, self.n_expert_used // 2))


_QWEN3_30B = SyntheticSpec(
    name="qwen3-30b-a3b", n_layer=48, n_embd=2048, n_head=32, n_head_kv=4, head_dim=128,
    n_expert=128, n_expert_used=8, n_ff_exp=768, n_vocab=151936, n_ctx_train=40960,
)  # fmt: skip
_MIXTRAL_8X7B = SyntheticSpec(
    name="mixtral-8x7b", arch="llama", n_layer=32, n_embd=4096, n_head=32, n_head_kv=8,
    head_dim=128, n_expert=8, n_expert_used=2, n_ff_exp=14336, n_vocab=32000, n_ctx_train=32768,
    rms_eps=1e-5,
)  # fmt: skip
PRESETS: dict[str, SyntheticSpec] = {
    "tiny": SyntheticSpec(),
    "tiny-mixtral": SyntheticSpec(name="tiny-mixtral", arch="llama", rope_freq_base=10000.0),
    "qwen3-30b-a3b": _QWEN3_30B,
    "qwen3-235b-a22b": dataclasses.replace(
        _QWEN3_30B, name="qwen3-235b-a22b", n_layer=94, n_embd=4096, n_head=64, n_ff_exp=1536
    ),
    "mixtral-8x7b": _MIXTRAL_8X7B,
}


@dataclass(frozen=True)
class TensorPlan:
    """One tensor as llama.cpp expects it: ``shape`` is in ggml order (row length first)."""

    name: str
    shape: Shape
    qtype: gguf.GGMLQuantizationType
    # "reader" / "writer": random matrix of RMS ``rms`` that reads the normed hidden state /
    # writes into the residual stream; "head": the output reader; "embd", "norm", "router"
    kind: str
    rms: float = 0.0
    layer: int = -1

    @property
    def n_rows(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def row_bytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.shape[0] // block * size

    @property
    def nbytes(self) -> int:
        return self.n_rows * self.row_bytes


Shard = list[tuple[int, TensorPlan]]  # (index in the plan, tensor), in file order
Job = tuple[int, int, TensorPlan, int, int]  # file offset, tensor index, tensor, row, rows


def _layer_plan(spec: SyntheticSpec, i: int, branch: float) -> list[TensorPlan]:
    qt, e, ff, n_expert = QUANT_TYPES[spec.quant], spec.n_embd, spec.n_ff_exp, spec.n_expert
    q, kv = spec.n_head * spec.head_dim, spec.n_head_kv * spec.head_dim

    def matrix(name: str, shape: Shape, kind: str = "reader", gain: float = 1.0) -> TensorPlan:
        return TensorPlan(f"blk.{i}.{name}.weight", shape, qt, kind, gain / math.sqrt(shape[0]))

    def norm(name: str, n: int) -> TensorPlan:
        return TensorPlan(f"blk.{i}.{name}.weight", (n,), Q.F32, "norm")

    qk_norms = [norm("attn_q_norm", spec.head_dim), norm("attn_k_norm", spec.head_dim)]
    return [
        norm("attn_norm", e),
        matrix("attn_q", (e, q)),
        matrix("attn_k", (e, kv)),
        matrix("attn_v", (e, kv)),
        matrix("attn_output", (q, e), "writer", branch),
        *(qk_norms if spec.arch == "qwen3moe" else []),
        norm("ffn_norm", e),
        TensorPlan(f"blk.{i}.ffn_gate_inp.weight", (e, n_expert), Q.F32, "router", layer=i),
        matrix("ffn_gate_exps", (e, ff, n_expert)),
        matrix("ffn_up_exps", (e, ff, n_expert)),
        # SiLU(gate)*up has an RMS near 0.6: 1.5 brings the expert output back near ``branch``
        matrix("ffn_down_exps", (ff, e, n_expert), "writer", 1.5 * branch),
    ]


def tensor_plan(spec: SyntheticSpec) -> list[TensorPlan]:
    """Every tensor of the model, in file order, with the names and shapes llama.cpp loads."""
    e = spec.n_embd
    # Residual branches are scaled down so that activations stay bounded over 94 layers.
    branch = 1.0 / math.sqrt(2 * spec.n_layer)
    # token_embd is read by row lookup on the CPU (llama.cpp never offloads the input layer),
    # so its type changes neither speed nor GPU memory; F16 keeps it simple to shape.
    plan = [TensorPlan("token_embd.weight", (e, spec.n_vocab), Q.F16, "embd")]
    qt = QUANT_TYPES[spec.quant]
    for i in range(spec.n_layer):
        plan += _layer_plan(spec, i, branch)
    plan.append(TensorPlan("output_norm.weight", (e,), Q.F32, "norm"))
    # logits with a spread of ~3 give peaked, sane next-token distributions
    head_rms = 3 / math.sqrt(e)
    plan.append(TensorPlan("output.weight", (e, spec.n_vocab), qt, "head", head_rms))
    return plan


def estimate_size_bytes(spec: SyntheticSpec) -> int:
    """Bytes of tensor data the model holds (the files add alignment and a few MB of metadata)."""
    return sum(t.nbytes for t in tensor_plan(spec))


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
    about ``k`` to its logit for every token.
    """
    w = rng.standard_normal((spec.n_expert, spec.n_embd), dtype=np.float32)
    w /= math.sqrt(spec.n_embd)
    w[:, :_CHANNEL_DIMS] = 0.0
    advantage = _SKEW_LOGITS * spec.routing_skew
    if advantage > 0:
        pattern = _channel_pattern(spec)
        w[hot_experts(spec)[layer], :_CHANNEL_DIMS] = advantage / _CHANNEL_DIMS * pattern
    return w


def _close_channel(t: TensorPlan, row0: int, rows: np.ndarray) -> None:
    """Zero the weights that would read or write the routing channel (see _router).

    ``rows`` is (rows, 32-value blocks, values or block bytes); an all-zero block is a valid
    zero in every type.
    """
    if t.kind in ("reader", "head"):
        rows[:, : _CHANNEL_DIMS // 32] = 0
    elif t.kind == "writer":
        out_dim = (row0 + np.arange(len(rows))) % t.shape[1]
        rows[out_dim < _CHANNEL_DIMS] = 0


@functools.lru_cache(maxsize=4)
def _unused_tokens(n_vocab: int) -> np.ndarray:
    return np.array(build_vocab(n_vocab).token_types) == gguf.TokenType.UNUSED


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
    unused = _unused_tokens(spec.n_vocab)[row0 : row0 + len(rows)]
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
    _close_channel(t, row0, rows)
    if t.kind == "head":
        _mute_unused_tokens(spec, t, row0, rows)
    return rows.view(np.uint8).reshape(-1)


def _random_quant_blocks(rng: np.random.Generator, t: TensorPlan, n_rows: int) -> np.ndarray:
    """Random Q4_0/Q8_0 blocks as (rows, blocks per row, block bytes)."""
    _, size = gguf.GGML_QUANT_SIZES[t.qtype]
    raw = _random_bytes(rng, n_rows * t.row_bytes)
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


def _chunk(spec: SyntheticSpec, index: int, t: TensorPlan, row0: int, n_rows: int) -> np.ndarray:
    """Rows [row0, row0+n_rows) of tensor ``index`` as bytes; its own seed keeps it reproducible."""
    rng = np.random.default_rng([spec.seed, index, row0])
    if t.kind == "norm":
        data = 1.0 + 0.02 * rng.standard_normal(t.shape[0], dtype=np.float32)
    elif t.kind == "router":
        data = _router(spec, t.layer, rng)
    elif t.kind == "embd":
        data = _f16_levels(1.0)[_random_bytes(rng, n_rows * t.shape[0])].reshape(n_rows, -1)
        data[:, :_CHANNEL_DIMS] = _channel_pattern(spec)
    else:
        return _random_rows(spec, rng, t, row0, n_rows)
    return data.view(np.uint8).reshape(-1)


def _chunk_jobs(tensors: Shard, start: int, align: int) -> tuple[list[Job], int]:
    """Every chunk of the tensors with its place in the file, and where the tensor data ends."""
    jobs: list[Job] = []
    offset = start
    for index, t in tensors:
        step = max(1, _CHUNK_BYTES // t.row_bytes) if t.kind not in ("norm", "router") else t.n_rows
        for row0 in range(0, t.n_rows, step):
            jobs.append((offset + row0 * t.row_bytes, index, t, row0, min(step, t.n_rows - row0)))
        offset += -(-t.nbytes // align) * align
    return jobs, offset


_WRITE_LOCK = threading.Lock()


def _write_at(fd: int, data: np.ndarray, offset: int) -> None:
    """Write ``data`` at ``offset``. Workers write their own chunks in place: no reordering in
    the main thread, and at most one chunk per worker in memory."""
    view = data.data  # a 1-D uint8 array's bytes
    while view:
        if hasattr(os, "pwrite"):
            n = os.pwrite(fd, view, offset)
        else:  # Windows: no pwrite, so one seek-and-write at a time
            with _WRITE_LOCK:
                os.lseek(fd, offset, os.SEEK_SET)
                n = os.write(fd, view)
        view, offset = view[n:], offset + n


def shard_paths(path: Path, split: int) -> list[Path]:
    """The file names llama.cpp expects: ``<prefix>-00001-of-0000N.gguf`` when split."""
    if split == 1:
        return [path]
    prefix = path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.name
    return [path.with_name(f"{prefix}-{i:05d}-of-{split:05d}.gguf") for i in range(1, split + 1)]


def _assign_shards(plan: list[TensorPlan], split: int) -> list[Shard]:
    """Contiguous runs of (index, tensor) of about equal bytes, each shard holding at least one."""
    total = sum(t.nbytes for t in plan)
    shards: list[Shard] = [[]]
    done = 0
    for index, t in enumerate(plan):
        shards_left, tensors_left = split - len(shards), len(plan) - index
        # next shard once this tensor's middle byte passes the current shard's share, or when
        # every shard still to open needs one of the tensors left
        past_share = done + t.nbytes / 2 > total * len(shards) / split
        if shards[-1] and shards_left and (past_share or tensors_left <= shards_left):
            shards.append([])
        shards[-1].append((index, t))
        done += t.nbytes
    return shards


def _add_metadata(writer: gguf.GGUFWriter, spec: SyntheticSpec) -> None:
    writer.add_type("model")
    writer.add_name(f"MoE Desk synthetic {spec.name}")
    writer.add_file_type(_FILE_TYPES[spec.quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_key_length(spec.head_dim)
    writer.add_value_length(spec.head_dim)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_expert_count(spec.n_expert)
    writer.add_expert_used_count(spec.n_expert_used)
    if spec.arch == "qwen3moe":
        # Qwen3 files record the dense-equivalent width (768*8 = 6144) besides the expert width
        writer.add_feed_forward_length(spec.n_ff_exp * spec.n_expert_used)
        writer.add_expert_feed_forward_length(spec.n_ff_exp)
    else:  # Mixtral: llama's feed_forward_length is the expert width
        writer.add_feed_forward_length(spec.n_ff_exp)
        writer.add_rope_dimension_count(spec.head_dim)
        writer.add_vocab_size(spec.n_vocab)
    writer.add_string("moedesk.synthetic.preset", spec.name)
    writer.add_uint32("moedesk.synthetic.seed", spec.seed)
    writer.add_float32("moedesk.synthetic.routing_skew", spec.routing_skew)
    writer.add_array("moedesk.synthetic.hot_experts", [e for h in hot_experts(spec) for e in h])
    add_tokenizer(writer, build_vocab(spec.n_vocab))


def _write_shard(
    path: Path,
    spec: SyntheticSpec,
    shard_no: int,
    shards: list[Shard],
    pool: ThreadPoolExecutor,
    progress: Callable[[int], None],
) -> None:
    writer = gguf.GGUFWriter(path, spec.arch)
    if shard_no == 0:
        _add_metadata(writer, spec)
    else:  # as gguf-split does: later shards carry the split keys only
        writer.kv_data[0].clear()
    if len(shards) > 1:
        writer.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_NO, shard_no)
        writer.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, len(shards))
        writer.add_int32(gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, sum(map(len, shards)))
    for _, t in shards[shard_no]:
        writer.add_tensor_info(t.name, t.shape[::-1], np.dtype(np.float32), t.nbytes, t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    fout.flush()
    jobs, end = _chunk_jobs(shards[shard_no], fout.tell(), writer.data_alignment)
    os.ftruncate(fout.fileno(), end)  # the padding between tensors stays zero

    def write_chunk(job: Job) -> int:
        offset, index, t, row0, n_rows = job
        data = _chunk(spec, index, t, row0, n_rows)
        _write_at(fout.fileno(), data, offset)
        return data.nbytes

    futures = [pool.submit(write_chunk, job) for job in jobs]
    try:
        for future in futures:
            progress(future.result())
    finally:  # on failure, let running chunks finish before their file closes
        for future in futures:
            future.cancel()
        wait(futures)
        writer.close()


def write_synthetic_model(
    path: Path, spec: SyntheticSpec, *, progress: Callable[[int, int], None] | None = None
) -> list[Path]:
    """Write the model (``spec.split`` shards) and return the shard paths, first one first.

    Each shard is written under a ``.partial`` name and renamed only when all are complete,
    so an interrupted run leaves no .gguf behind. ``progress(done, total)`` gets tensor bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plan = tensor_plan(spec)
    shards = _assign_shards(plan, spec.split)
    finals = shard_paths(path, spec.split)
    temps = [p.with_name(f"{p.name}.{os.getpid()}.partial") for p in finals]
    total, done = sum(t.nbytes for t in plan), 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for shard_no, temp in enumerate(temps):
                _write_shard(temp, spec, shard_no, shards, pool, advance)
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    return finals


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.engine.synthetic",
        description="Write a synthetic Mixture-of-Experts GGUF model with random weights.",
    )
    parser.add_argument("output", type=Path, help="output .gguf path (shards get -0000k-of-N)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--layers", type=int, help="number of layers (n_layer)")
    parser.add_argument("--experts", type=int, help="routed experts per layer (n_expert)")
    parser.add_argument("--experts-used", type=int, help="experts chosen per token")
    parser.add_argument("--quant", choices=sorted(QUANT_TYPES), help="type of the big matrices")
    parser.add_argument("--routing-skew", type=float, help="0 = uniform routing; 1 = strong")
    parser.add_argument("--split", type=int, help="number of shards (llama.cpp split format)")
    parser.add_argument("--seed", type=int)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command line: write the model, print each shard with its size and the write speed."""
    args = _parse_args(argv)
    fields = dict(
        n_layer=args.layers,
        n_expert=args.experts,
        n_expert_used=args.experts_used,
        quant=args.quant,
        routing_skew=args.routing_skew,
        split=args.split,
        seed=args.seed,
    )
    overrides = {name: value for name, value in fields.items() if value is not None}
    try:
        spec = SyntheticSpec.preset(args.preset, **overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = estimate_size_bytes(spec)
    folder = args.output.resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < size * 1.01:
        print(f"error: {size / 1e9:.1f} GB needed, {folder} has {free / 1e9:.1f} GB free",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"writing {spec.name} ({spec.arch}, {spec.n_layer} layers, {spec.n_expert} experts, "
          f"top-{spec.n_expert_used}, {spec.quant}): {size / 1e9:.2f} GB", flush=True)  # fmt: skip
    start = last_shown = time.perf_counter()
    interactive = sys.stdout.isatty()

    def report(done: int, total: int) -> None:
        nonlocal last_shown
        now = time.perf_counter()
        if interactive and now - last_shown > 0.5:
            last_shown = now
            rate = done / 1e6 / (now - start)
            print(f"\r{done / total:6.1%}  {rate:8,.0f} MB/s", end="", flush=True)

    paths = write_synthetic_model(args.output, spec, progress=report)
    seconds = time.perf_counter() - start
    if interactive:
        print()
    for path in paths:
        print(f"{path}  {path.stat().st_size / 1e6:,.1f} MB")
    print(f"{size / 1e6:,.0f} MB in {seconds:.1f} s ({size / 1e6 / seconds:,.0f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
