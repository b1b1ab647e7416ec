"""llama.cpp's compute buffers with a CUDA GPU: its graph allocator, replayed.

llama.cpp sizes each backend's compute buffer by walking a ubatch's graph once with its graph
allocator (ggml-alloc.c): a node's output takes the best-fitting free block (else the end of
the buffer), in-place ops (adds, norms, RoPE) take their input's block, a tensor is freed after
its last use. So the peak is not a sum of named activations: it depends on the graph's order
and on the holes earlier tensors leave. With Qwen3-30B's experts on the GPU the 297 MiB of
logits land above a 41 MiB hole the last MoE layer left (342 MiB); with its experts in RAM,
at the bottom (301 MiB). Op offload adds host weights copied in one matmul at a time (a 3 GB
expert tensor for Kimi-K2), ggml-cuda's fused MoE reduction keeps the experts' outputs beside
their weighted copy, MLA's absorbed query is 128 heads x 576 wide.

So this module replays the allocator. ``cuda_graphs.json`` holds, per architecture, placement
and flash-attention setting, the allocator's events for a model of a few layers on llama.cpp's
CUDA backend: allocate, reuse a parent's block in place, free; each size a product of the
model's dimensions (``graph_dims``: E n_embd, T ubatch tokens, KV cache cells, ...) or a weight
that op offload copies in. bench/cuda_sim records them with a CUDA stand-in (llama.cpp's
no_alloc load, its allocator traced); the stand-in's buffers equal the 20 measured on an H200
(docs/bench/memory-vs-llama-h200.txt). Here the events are sized for the model at hand and run
through a copy of ggml's best-fit allocator: exact wherever the model's graph has the recorded
structure, whatever its widths, ubatch and context. A model has more layers than the recording;
the allocator's layout repeats from layer to layer, so a few layers reach the same peak.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from app.engine.placement import PlacementPlan
from app.gguf.info import GGUFModel, TensorEntry, attention_shape, sliding_window_cells

GRAPHS = Path(__file__).with_name("cuda_graphs.json")
GPU_ALIGNMENT = 128  # ggml-cuda's buffer alignment
HOST_ALIGNMENT = 32  # the CPU's (CUDA_Host pinned buffers use it)
MATRIX_ROW_PADDING = 512  # ggml-cuda pads a quantized matrix's last row to this many values
OP_OFFLOAD_MIN_BATCH = 32  # ggml-cuda's offload_op: batches of at least this many tokens
# values per block and bytes per block of the types a weight copy may have
BLOCKS = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
          "MXFP4": (32, 17), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
          "Q5_K": (256, 176), "Q6_K": (256, 210), "IQ4_XS": (256, 136), "IQ4_NL": (32, 18)}


@dataclass
class ComputeBuffers:
    gpu: int  # bytes of each GPU's compute buffer
    host: int  # bytes of the pinned host compute buffer (inputs, CPU layers)


def graph_dims(model: GGUFModel, plan: PlacementPlan) -> dict[str, int]:
    """The dimensions the recorded sizes are products of, for ``model`` under ``plan``."""
    a = attention_shape(model)
    u = min(plan.n_ubatch, plan.n_batch, plan.n_ctx)
    cells = plan.n_ctx * plan.n_parallel
    dims = {
        "T": u, "KV": cells, "E": model.arch_int("embedding_length"), "V": vocab_size(model),
        "H": a.n_head, "HKV": a.n_head_kv, "DK": a.key_length, "DV": a.value_length,
        "F": model.arch_int("expert_feed_forward_length"), "FD": model.arch_int("feed_forward_length"),
        "X": model.n_expert, "K": plan.n_expert_used or model.n_expert_used,
        "G": model.arch_int("expert_group_count"), "GU": model.arch_int("expert_group_used_count"),
        "R": model.arch_int("attention.kv_lora_rank"), "QR": model.arch_int("attention.q_lora_rank"),
        "DR": model.arch_int("rope.dimension_count"), "DKM": model.arch_int("attention.key_length_mla"),
        "DVM": model.arch_int("attention.value_length_mla"),
    }
    if model.arch_int("attention.sliding_window"):
        dims["KVS"] = sliding_window_cells(model, cells, u, plan.n_parallel)
    return {name: value for name, value in dims.items() if value}


def vocab_size(model: GGUFModel) -> int:
    """Vocabulary size: the metadata key, else the token list's length, else token_embd's rows."""
    size = model.arch_int("vocab_size")
    if size:
        return size
    tokens = model.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, int) and tokens > 0:
        return tokens  # gguf_info keeps an array's length only
    for t in model.tensors:
        if t.name == "token_embd.weight" and len(t.shape) == 2:
            return t.shape[1]
    return 0


def graph_key(model: GGUFModel) -> str:
    """What shapes llama.cpp's graph for ``model`` beyond its widths: the architecture and the
    parts some of its models have (DeepSeek-V3's expert groups, GLM-4.5's q/k norms, a power-of-2
    expert count, which ggml-cuda's fused top-k routing needs)."""
    parts = [model.architecture]
    if model.arch_int("expert_group_count") > 1:
        parts.append("groups")
    if any(t.name.endswith("attn_q_norm.weight") for t in model.tensors):
        parts.append("qk-norm")
    n = model.n_expert
    parts.append("pow2" if n and n & (n - 1) == 0 else "other")
    return "/".join(parts)


def placement_kind(model: GGUFModel, plan: PlacementPlan) -> str | None:
    """Which recorded placement ``plan`` is: "gpu" (everything on the GPU), "ram" (every routed
    expert in RAM), "mixed" (some layers' experts in RAM), "classic" (whole layers on the CPU);
    None where no recording covers it: op offload off (or ubatches under 32 tokens) while
    weights live in RAM, experts streamed from the SSD."""
    if plan.expert_stream != "off":
        return None  # engine patch 0005 builds its own MoE graph: not recorded
    # (hot experts in VRAM, patch 0004, split only ubatches under 32 tokens: the prompt's
    # ubatch, which sizes the buffer, keeps llama.cpp's graph)
    n_layer = model.n_trunk_layers
    classic = 0 <= plan.n_gpu_layers < model.n_layer + 1
    experts = plan.experts_in_ram
    n_moe = len(model.moe_layers)
    in_ram = classic or experts != "none" or bool(plan.overrides)
    if in_ram and (not plan.op_offload or min(plan.n_ubatch, plan.n_batch) < OP_OFFLOAD_MIN_BATCH):
        return None
    if classic:
        return "classic" if plan.n_gpu_layers > 0 else None
    if plan.overrides:
        return "mixed"
    if experts == "none" or not n_moe:
        return "gpu"
    if experts == "all" or (isinstance(experts, int) and experts >= n_layer):
        return "ram"
    return "mixed" if experts else "gpu"


def cuda_flash_attention(model: GGUFModel) -> bool:
    """Whether ggml-cuda has a flash-attention kernel for the model's heads (fattn.cu's
    ggml_cuda_get_best_fattn_kernel): llama.cpp's "auto" turns it on only then. The KV cells
    llama.cpp allocates are a multiple of 256, the kernels' stride, and a mask is always given."""
    a = attention_shape(model)
    gqa = a.n_head // max(a.n_head_kv, 1)
    k, v = a.key_length, a.value_length
    if k in (40, 64, 72, 80, 96, 112, 128, 256):
        return v == k
    if k == 192:
        return v == 128 and gqa % 8 == 0
    if k == 320:
        return v == 256 and gqa % 32 == 0
    if k == 512:
        return v == 512 and gqa >= 2
    if k == 576:
        return v == 512 and gqa >= 2
    return False


@functools.cache
def recorded_graphs() -> dict[str, dict[str, str]]:
    """cuda_graphs.json's recordings by "architecture/parts|placement|attention[|layers]"."""
    if not GRAPHS.exists():  # a bundle without the file: the memory model's formulas instead
        return {}
    return json.loads(GRAPHS.read_text())["graphs"]


def cuda_compute_buffers(model: GGUFModel, plan: PlacementPlan) -> ComputeBuffers | None:
    """The GPU's and the pinned host's compute buffers for ``model`` under ``plan`` on one CUDA
    GPU, or None where no recording fits (another architecture, a placement without op offload)."""
    kind = placement_kind(model, plan)
    if kind is None:
        return None
    # a quantized cache: llama.cpp rotates K and V before quantizing them (more nodes)
    flash = plan.flash_attn == "on" or (plan.flash_attn == "auto" and cuda_flash_attention(model))
    attention = "no-fa" if not flash else "fa" if plan.type_k == plan.type_v == "f16" else "fa-q8"
    found = closest_graph(graph_key(model), kind, attention, model.n_trunk_layers)
    if found is None:
        return None
    dims = graph_dims(model, plan)
    weights = weight_copy_bytes(model)
    gpu = replay(found["CUDA0"], dims, weights, plan, GPU_ALIGNMENT)
    host = replay(found["CUDA_Host"], dims, weights, plan, HOST_ALIGNMENT)
    return ComputeBuffers(gpu=gpu, host=host)


def closest_graph(key: str, kind: str, attention: str, n_layer: int) -> dict[str, str] | None:
    """The recording for this architecture, placement and attention: of the model's own layer
    count when it is one of the few-layer ones (their layout has not settled yet), with the
    model's parts where one has them (else the most parts in common: a power-of-2 expert count
    changes only the routing's small tensors)."""
    arch, *parts = key.split("/")
    best, best_score = None, None
    for name, graph in recorded_graphs().items():
        recorded_key, recorded_kind, recorded_attention, *layers = name.split("|")
        recorded_arch, *recorded_parts = recorded_key.split("/")
        if (recorded_arch, recorded_kind, recorded_attention) != (arch, kind, attention):
            continue
        if layers and int(layers[0]) != n_layer:
            continue
        score = (bool(layers), len(set(parts) & set(recorded_parts)) - len(set(parts) ^ set(recorded_parts)))
        if best_score is None or score > best_score:
            best, best_score = graph, score
    return best


def weight_copy_bytes(model: GGUFModel) -> dict[str, int]:
    """Per weight role ("ffn_down_exps.weight"), the largest CUDA allocation of such a weight:
    what op offload's copy of one takes in the GPU's compute buffer."""
    sizes: dict[str, int] = {}
    for t in model.loaded_tensors:
        role = t.name.split(".", 2)[2] if t.name.startswith("blk.") else t.name
        sizes[role] = max(sizes.get(role, 0), cuda_alloc_size(t))
    return sizes


def cuda_alloc_size(t: TensorEntry) -> int:
    """ggml-cuda's allocation of a matrix: a quantized one's rows padded to 512 values."""
    block = BLOCKS.get(t.type_name)
    row = t.shape[0] if t.shape else 0
    if block is None or row % MATRIX_ROW_PADDING == 0:
        return t.n_bytes
    values, size = block
    return t.n_bytes + (MATRIX_ROW_PADDING - row % MATRIX_ROW_PADDING) // values * size


def replay(events: str, dims: dict[str, int], weights: dict[str, int], plan: PlacementPlan,
           alignment: int) -> int:
    """Runs recorded allocator events with this model's sizes; the buffer's peak in bytes.

    Events, separated by ";": ``A size`` allocates the next tensor, ``R parent size`` gives the
    next tensor its parent's block (in place; a smaller one frees the rest), ``F id`` frees
    tensor ``id`` (ids count A and R events from 0). Sizes (``event_size``): a product of dims
    (``4*E*T``); ``w:ROLE`` a weight copied in; ``fa:OUT:K:V:SHARED`` flash attention's output,
    which on CUDA also holds f16 copies of a quantized K and V (K and V elements; SHARED: V is a
    view of K, as in MLA); ``v:BYTES:NE:STRIDES`` a strided view copied whole (a quantized KV
    cache's, classic offload); ``p:BYTES:ROW:SIZE`` a quantized tensor padded by ggml-cuda."""
    allocator = BestFitAllocator(alignment)
    blocks: list[tuple[int, int]] = []  # per tensor id: (offset, size)
    for event in events.split(";"):
        op, _, arg = event.partition(" ")
        if op == "A":
            size = event_size(arg, dims, weights, plan)
            blocks.append((allocator.alloc(size), size))
        elif op == "R":
            parent, _, size_text = arg.partition(" ")
            offset, parent_size = blocks[int(parent)]
            size = event_size(size_text, dims, weights, plan)
            blocks.append((offset, size))
            extra = pad(parent_size, alignment) - pad(size, alignment)
            if extra > 0:
                allocator.free(offset + pad(size, alignment), extra)
        else:
            offset, size = blocks[int(arg)]
            allocator.free(offset, size)
    return allocator.peak


def event_size(text: str, dims: dict[str, int], weights: dict[str, int], plan: PlacementPlan) -> int:
    if text.startswith("p:"):  # a quantized tensor on CUDA: padded by the rest of a 512-value row
        _, per_value, row, rest = text.split(":", 3)
        short = -product(row, dims) % MATRIX_ROW_PADDING
        return event_size(rest, dims, weights, plan) + product(f"{per_value}*{short}", dims)
    if text.startswith("w:"):
        return weights.get(text[2:], 0)
    if text.startswith("fa:"):
        out, k, v, shared = text[3:].split(":")
        size = product(out, dims)
        if plan.type_k != "f16":
            size = pad(size, GPU_ALIGNMENT) + 2 * product(k, dims)
        if plan.type_v != "f16" and shared == "0":
            size = pad(size, GPU_ALIGNMENT) + 2 * product(v, dims)
        return size
    if text.startswith("v:"):  # a strided view copied whole: its first row, a stride per further row
        _, size, shape, strides = text.split(":")  # size: bytes per value; strides in values
        ne = [product(d, dims) for d in shape.split(",")]
        extent = ne[0] + sum((n - 1) * product(stride, dims)
                             for n, stride in zip(ne[1:], strides.split(","), strict=True))
        return product(f"{size}*{extent}", dims)
    return product(text, dims)


def product(text: str, dims: dict[str, int]) -> int:
    """``4*E*T``, ``34/32*DK*KV``, ``4*X/G*GU*T``, ``4*R+DR``: a product of dims and integers, a
    factor ``A/B`` a quotient (a quantized type's bytes per value, experts per group), ``A+B`` a
    sum. Rational until the end: 34/32 of a row of 128 values is 136 bytes."""
    def value(term: str) -> int:
        return int(term) if term.isdigit() else dims.get(term, 0)

    numerator, denominator = 1, 1
    for factor in text.split("*"):
        if "/" in factor:
            a, b = factor.split("/")
            numerator *= value(a)
            denominator *= max(value(b), 1)
        elif "+" in factor:
            numerator *= sum(value(term) for term in factor.split("+"))
        else:
            numerator *= value(factor)
    return numerator // denominator


def pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


class BestFitAllocator:
    """ggml-alloc.c's ggml_dyn_tallocr for one chunk: free blocks sorted by offset, the last one
    the open end of the buffer. A tensor takes the smallest free block it fits (the open end
    only when none does); freed bytes merge with their neighbours."""

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment
        self.free_blocks: list[list[int]] = [[0, 1 << 62]]  # [offset, size]
        self.peak = 0

    def alloc(self, size: int) -> int:
        size = pad(size, self.alignment)
        best = len(self.free_blocks) - 1
        best_size = None
        for i, (_, block_size) in enumerate(self.free_blocks[:-1]):
            if block_size >= size and (best_size is None or block_size <= best_size):
                best, best_size = i, block_size
        block = self.free_blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.free_blocks[best]
        self.peak = max(self.peak, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        size = pad(size, self.alignment)
        blocks = self.free_blocks
        for i, block in enumerate(blocks):
            if block[0] + block[1] == offset:  # ends where the freed bytes start
                block[1] += size
                if i + 1 < len(blocks) and block[0] + block[1] == blocks[i + 1][0]:
                    block[1] += blocks[i + 1][1]
                    del blocks[i + 1]
                return
            if offset + size == block[0]:  # starts where they end
                block[0] = offset
                block[1] += size
                if i > 0 and blocks[i - 1][0] + blocks[i - 1][1] == offset:
                    blocks[i - 1][1] += block[1]
                    del blocks[i]
                return
        at = next((i for i, block in enumerate(blocks) if block[0] > offset), len(blocks))
        blocks.insert(at, [offset, size])
