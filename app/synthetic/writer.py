"""Writing synthetic Mixture-of-Experts GGUF models that llama.cpp loads and runs.

Tests use tiny ones; benchmarks use real shapes (Qwen3-30B-A3B, Qwen3-235B-A22B) with random
weights, so that placement and speed can be measured without downloading a model. Quantized
weights are written as random but valid Q4_0/Q8_0 blocks (no float quantization), generated
chunk by chunk on all cores and streamed to disk, so a 16 GB model never sits in memory.

Routing is uniform by default; ``--routing-skew`` favours a fixed hot set per layer, and
``--routing realistic`` routes like Qwen3's routers (skewed per layer, local from token to token;
see app/synthetic/routing.py).

Usage: ``python -m app.synthetic OUT.gguf --preset qwen3-30b-a3b --split 4``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import gguf
import numpy as np

from app.gguf.info import shard_names
from app.synthetic.spec import (
    EXPERT_QUANT_TYPES,
    PRESETS,
    QUANT_TYPES,
    ROUTING_MODES,
    Job,
    Shard,
    SyntheticSpec,
    TensorPlan,
    estimate_size_bytes,
    tensor_plan,
)
from app.synthetic.tokenizer import add_tokenizer, build_vocab
from app.synthetic.weights import _chunk, hot_experts

_FILE_TYPES = {
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
}
# Rows per task: 4 MB wrote fastest on a 16-core machine (0.5-16 MB tried: fits the caches,
# still little Python per byte). Chunks are seeded one by one, so this also fixes the bytes.
_CHUNK_BYTES = 4 << 20
_YARN_ORIGINAL_CONTEXT = 4096


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
    return [path.with_name(name) for name in shard_names(prefix, split)]


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
    mxfp4 = spec.expert_quant == "MXFP4"
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_MXFP4_MOE if mxfp4 else _FILE_TYPES[spec.quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer_all)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_expert_count(spec.n_expert)
    writer.add_expert_used_count(spec.n_expert_used)
    _add_architecture_metadata(writer, spec)
    writer.add_string("moedesk.synthetic.preset", spec.name)
    writer.add_uint32("moedesk.synthetic.seed", spec.seed)
    writer.add_float32("moedesk.synthetic.routing_skew", spec.routing_skew)
    writer.add_string("moedesk.synthetic.routing", spec.routing)
    writer.add_array("moedesk.synthetic.hot_experts", [e for h in hot_experts(spec) for e in h])
    add_tokenizer(writer, build_vocab(spec.n_vocab, spec.tokenizer))


def _add_architecture_metadata(writer: gguf.GGUFWriter, spec: SyntheticSpec) -> None:
    """The keys llama.cpp's converter writes for the architecture (conversion/*.py)."""
    if spec.arch == "llama":  # Mixtral: llama's feed_forward_length is the expert width
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
        writer.add_feed_forward_length(spec.n_ff_exp)
        writer.add_rope_dimension_count(spec.head_dim)
        writer.add_vocab_size(spec.n_vocab)
        return
    if spec.arch == "deepseek2":
        # MLA as MQA over the latent: one KV "head" of kv_lora_rank + RoPE values; the _mla
        # lengths are the heads after decompression
        writer.add_key_length(spec.kv_lora_rank + spec.rope_dim)
        writer.add_value_length(spec.kv_lora_rank)
        writer.add_key_length_mla(spec.head_dim)
        writer.add_value_length_mla(spec.v_head_dim)
        if spec.q_lora_rank:
            writer.add_q_lora_rank(spec.q_lora_rank)
        writer.add_kv_lora_rank(spec.kv_lora_rank)
        writer.add_vocab_size(spec.n_vocab)
    else:
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
    if spec.rope_dim:
        writer.add_rope_dimension_count(spec.rope_dim)
    # Qwen3 files record the dense-equivalent width (768*8 = 6144) besides the expert width;
    # DeepSeek's and GLM's the leading dense layers' width
    dense_equivalent = spec.n_ff_exp * (1 if spec.arch == "gpt-oss" else spec.n_expert_used)
    writer.add_feed_forward_length(spec.n_ff or dense_equivalent)
    writer.add_expert_feed_forward_length(spec.n_ff_exp)
    if spec.n_dense_lead:
        writer.add_leading_dense_block_count(spec.n_dense_lead)
    if spec.n_expert_shared:
        writer.add_expert_shared_count(spec.n_expert_shared)
    if spec.expert_gating == "sigmoid":
        writer.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        writer.add_expert_weights_norm(True)
    if spec.expert_weights_scale:
        writer.add_expert_weights_scale(spec.expert_weights_scale)
    if spec.n_expert_groups:
        writer.add_expert_group_count(spec.n_expert_groups)
        writer.add_expert_group_used_count(spec.n_group_used)
    if spec.n_nextn:
        writer.add_nextn_predict_layers(spec.n_nextn)
    if spec.sliding_window:
        writer.add_sliding_window(spec.sliding_window)
    if spec.arch in ("deepseek2", "gpt-oss") and spec.n_ctx_train > _YARN_ORIGINAL_CONTEXT:
        # both stretch a 4096-token RoPE with YaRN (DeepSeek-V3: x40, gpt-oss and Kimi-K2: x32)
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(spec.n_ctx_train / _YARN_ORIGINAL_CONTEXT)
        writer.add_rope_scaling_orig_ctx_len(_YARN_ORIGINAL_CONTEXT)
        if spec.arch == "deepseek2":
            writer.add_rope_scaling_yarn_log_mul(0.1)  # 0.1 * mscale_all_dim, as the converter


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


def write_synthetic_header(path: Path, spec: SyntheticSpec) -> Path:
    """``spec``'s metadata and tensor table with the tensor data a sparse hole: to gguf_info
    and the advisor the same as the real file, a few MB on disk even for a 200 GB shape.
    llama.cpp could not run it (every weight is zero)."""
    writer = gguf.GGUFWriter(path, spec.arch)
    _add_metadata(writer, spec)
    write_sparse_tensors(writer, [(t.name, t.shape, t.qtype, t.nbytes) for t in tensor_plan(spec)])
    return path


def write_sparse_tensors(writer: gguf.GGUFWriter,
                         tensors: list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType, int]]) -> None:
    """Finish ``writer``'s file (its metadata already added) with this tensor table,
    (name, shape as gguf_info lists it, type, bytes), and a sparse hole for the data."""
    data_bytes = 0
    for name, shape, qtype, nbytes in tensors:
        writer.add_tensor_info(name, tuple(shape)[::-1], np.dtype(np.float32), nbytes, qtype)
        data_bytes += -(-nbytes // writer.data_alignment) * writer.data_alignment
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    fout.flush()
    os.ftruncate(fout.fileno(), fout.tell() + data_bytes)
    writer.close()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.synthetic",
        description="Write a synthetic Mixture-of-Experts GGUF model with random weights.",
    )
    parser.add_argument("output", type=Path, help="output .gguf path (shards get -0000k-of-N)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--layers", type=int, help="number of layers (n_layer)")
    parser.add_argument("--experts", type=int, help="routed experts per layer (n_expert)")
    parser.add_argument("--experts-used", type=int, help="experts chosen per token")
    parser.add_argument("--quant", choices=sorted(QUANT_TYPES), help="type of the big matrices "
                        "(gpt-oss presets keep their MXFP4 experts)")
    parser.add_argument("--expert-quant", choices=sorted(EXPERT_QUANT_TYPES),
                        help="type of the routed experts when not --quant's")
    parser.add_argument("--routing-skew", type=float, help="0 = uniform routing; 1 = strong")
    parser.add_argument("--routing", choices=ROUTING_MODES,
                        help="realistic: skewed and local from token to token like Qwen3's "
                        "routers (top-25%% of experts ~60%% of selections, ~40%% repeat)")
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
        expert_quant=args.expert_quant,
        routing_skew=args.routing_skew,
        routing=args.routing,
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
    types = f"{spec.quant}, experts {spec.expert_quant}" if spec.expert_quant else spec.quant
    print(f"writing {spec.name} ({spec.arch}, {spec.n_layer} layers, {spec.n_expert} experts, "
          f"top-{spec.n_expert_used}, {types}, {spec.routing} routing): "
          f"{size / 1e9:.2f} GB", flush=True)  # fmt: skip
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


