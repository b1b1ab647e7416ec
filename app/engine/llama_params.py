"""A PlacementPlan as llama.cpp model and context params (ctypes structs).

The ctypes arrays that the params point into (override patterns, buffer types, KV overrides,
tensor split) must outlive the load call; ``ModelParams`` keeps them referenced.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp
import psutil

from app.engine import ggml_backend
from app.engine.placement import PlacementPlan, TensorOverride, tensor_overrides
from app.errors import PlacementError

GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
              "iq4_nl": 20, "bf16": 30}
SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
MAX_PARALLEL = 256  # llama.cpp's LLAMA_MAX_SEQ
# llama_load_mode: NONE 0, MMAP 1, MLOCK 2, MMAP_MLOCK 3
LOAD_MODES = {(False, False): 0, (True, False): 1, (False, True): 2, (True, True): 3}


class BuftOverride(ctypes.Structure):
    """struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }"""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@dataclass
class ModelParams:
    params: llama_cpp.llama_model_params
    overrides: list[TensorOverride]
    keepalive: list[object] = field(default_factory=list)


def default_threads() -> int:
    """Physical cores: llama.cpp's decode is memory bound and hyperthreads only contend."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 4


def model_params(plan: PlacementPlan, n_layer: int, architecture: str,
                 progress: Callable[[float, ctypes.c_void_p], bool]) -> ModelParams:
    """llama_model_params for ``plan``. ``progress`` must be a llama_progress_callback."""
    params = llama_cpp.llama_model_default_params()
    keep: list[object] = [progress]
    params.n_gpu_layers = plan.n_gpu_layers
    params.split_mode = SPLIT_MODES[plan.split_mode]
    params.main_gpu = plan.main_gpu
    params.load_mode = LOAD_MODES[(plan.use_mmap, plan.use_mlock)]
    # streamed experts must stay in the mapped file: not repacked (with a GPU and mmap, weights
    # in RAM stay in the file anyway)
    streamed = plan.expert_stream != "off"
    params.use_extra_bufts = plan.repack and not streamed
    params.no_host = plan.no_host and plan.repack and not streamed  # repacked layouts need the extra buffers
    params.progress_callback = progress

    if plan.tensor_split:
        split = (ctypes.c_float * llama_cpp.LLAMA_MAX_DEVICES)(*plan.tensor_split)
        params.tensor_split = split
        keep.append(split)

    try:
        rules = tensor_overrides(plan, n_layer)
    except (ValueError, re.error) as exc:
        raise PlacementError(f"bad tensor override: {exc}", "Fix the regex in the rule.") from exc
    if rules:
        known = {d.name: d for d in ggml_backend.devices()}
        array = (BuftOverride * (len(rules) + 1))()
        for i, rule in enumerate(rules):
            if rule.device not in known:
                raise PlacementError(
                    f"the placement sends tensors to {rule.device}, which this build lacks "
                    f"(it has {', '.join(known)}).",
                    "Pick one of those devices, or rebuild the engine for your GPU (README).",
                )
            pattern = rule.pattern.encode()
            keep.append(pattern)
            array[i].pattern = pattern
            array[i].buft = ggml_backend.buffer_type(rule.device)
        array[len(rules)].pattern = None  # NULL-terminated
        params.tensor_buft_overrides = ctypes.cast(array, ctypes.c_void_p)
        keep.append(array)

    if plan.n_expert_used is not None:
        kv = (llama_cpp.llama_model_kv_override * 2)()
        kv[0].key = f"{architecture}.expert_used_count".encode()
        kv[0].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
        kv[0].value.val_i64 = plan.n_expert_used
        kv[1].key = b""  # an empty key ends the list
        params.kv_overrides = kv
        keep.append(kv)
    return ModelParams(params=params, overrides=rules, keepalive=keep)


def context_params(plan: PlacementPlan) -> llama_cpp.llama_context_params:
    """llama_context_params for ``plan``."""
    for name in (plan.type_k, plan.type_v):
        if name not in GGML_TYPES:
            raise PlacementError(f"unknown KV cache type {name!r}",
                                 f"Use one of {', '.join(GGML_TYPES)}.")
    if not 1 <= plan.n_parallel <= MAX_PARALLEL:
        raise PlacementError(f"{plan.n_parallel} parallel sequences asked for; llama.cpp "
                             f"takes 1 to {MAX_PARALLEL}.",
                             "Use 1 for one chat at a time, or N for N chats at once.")
    if plan.n_parallel > plan.n_batch:
        raise PlacementError(f"{plan.n_parallel} parallel sequences do not fit a batch of "
                             f"{plan.n_batch} tokens (one token each per step).",
                             "Raise n_batch, or lower the parallel sequences.")
    params = llama_cpp.llama_context_default_params()
    threads = plan.n_threads or default_threads()
    # n_ctx tokens for each sequence, in one unified KV cache: with a cache per sequence
    # (kv_unified off) llama.cpp splits a batch into one ubatch per run of consecutive
    # sequence ids, so a prompt chunk beside decoding tokens, or a free slot between busy
    # ones, would cost extra passes over the experts. The engine keeps each sequence within
    # its n_ctx, so the shared cache never overflows.
    params.n_ctx = plan.n_ctx * plan.n_parallel
    params.n_batch = plan.n_batch
    params.n_ubatch = min(plan.n_ubatch, plan.n_batch)
    params.n_seq_max = plan.n_parallel
    params.kv_unified = plan.n_parallel > 1  # one sequence: the same cache either way
    params.n_threads = threads
    params.n_threads_batch = plan.n_threads_batch or threads
    params.type_k = GGML_TYPES[plan.type_k]
    params.type_v = GGML_TYPES[plan.type_v]
    params.flash_attn_type = FLASH_ATTN[plan.flash_attn]
    params.op_offload = plan.op_offload
    params.offload_kqv = True
    # sliding-window layers (gpt-oss: half of them) cache only their window, as llama-server
    # does: 4.8 GB less VRAM for gpt-oss-120b at 128k; slots.py re-prefills when a chat goes
    # back further than the window
    params.swa_full = False
    params.no_perf = False
    return params
