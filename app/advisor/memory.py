"""The memory model: bytes a model takes on each device under a placement plan.

It follows llama.cpp's own rules (llama-model.cpp ``load_tensors``, llama-context.cpp):

* Weights. ``n_gpu_layers`` counts the output layer too: of ``n_layer + 1`` layers the last
  ``n_gpu_layers`` go to the GPU, so layer ``i`` is offloaded when
  ``i >= n_layer + 1 - n_gpu_layers`` and the output (``output``, ``output_norm``) as soon as
  ``n_gpu_layers >= 1``. ``token_embd`` (the input layer) always stays in host memory. Then
  the plan's tensor overrides, first match wins, move single tensors (routed experts to RAM).
  "Weights" are the bytes each tensor holds, counted once: what must be resident for
  inference. On a CPU, llama.cpp also logs the mmapped file span (``CPU_Mapped``) next to
  repacked copies of the quantized matrices (``CPU_REPACK``, ``AMX``); the pages behind the copies
  are clean page cache the kernel drops, so they are not counted.
* KV cache, per layer on that layer's device (llama.cpp's default ``offload_kqv``):
  ``cells * n_head_kv * (key_length * bytes(type_k) + value_length * bytes(type_v))``, with
  ``cells = n_ctx * n_parallel``: each parallel sequence has a context of n_ctx tokens, in
  one unified cache (``app.engine.llama_params``).
* Compute buffers: with a GPU, llama.cpp's CUDA graph allocator replayed
  (``gpu_compute_buffers``, app/advisor/compute_buffer.py); on a CPU, ``compute_buffer_bytes``.
* Hot experts in VRAM (``plan.expert_cache``, engine patch 0004): per MoE layer whose routed
  experts are in RAM, ``slots`` experts copied to the GPU of the layer's router
  (``ffn_gate_inp``: the layer's GPU, unless an override sends it elsewhere; the first GPU for
  a router in RAM), counted as weights there; its maps are a few KiB. With several GPUs each
  GPU holds the packs of its own layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from app.advisor.compute_buffer import cuda_compute_buffers, vocab_size
from app.engine.placement import (
    CPU_DEVICE,
    PlacementPlan,
    expert_cache_slots,
    first_matching_device,
    tensor_overrides,
)
from app.gguf.info import GGUFModel, TensorEntry, attention_shape, kv_bytes_by_layer

GiB = 1024**3
MiB = 1024**2
# Left free in RAM for the OS, the desktop, MoE Desk's own window and the file cache's floor.
RAM_HEADROOM = 4 * GiB
# Left free on a GPU for the CUDA/Vulkan context, cuBLAS workspaces and fragmentation
# (vram_free already leaves out what the desktop uses now).
VRAM_HEADROOM = 1 * GiB


@dataclass
class DeviceMemory:
    """What one device holds, in bytes."""

    device: str  # "CPU" or a GPU's name as the plan names it ("CUDA0", ...)
    weights: int = 0
    kv: int = 0
    compute: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


n_vocab = vocab_size  # the vocabulary's size (app/advisor/compute_buffer.py reads it too)


def expert_ff_length(model: GGUFModel) -> int:
    """Width of one routed expert: expert_feed_forward_length, else feed_forward_length."""
    return model.arch_int("expert_feed_forward_length") or model.arch_int("feed_forward_length")


def compute_buffer_bytes(model: GGUFModel, plan: PlacementPlan, staged: int = 0, head: bool = True) -> int:
    """llama.cpp's compute buffer for one ubatch: the peak of the graph allocator (f32).

    The peak is at one of two places of the graph (u = n_ubatch, all activations f32):

    * the output head: logits plus the normed hidden state and the residual,
      ``4 u (n_vocab + 2 n_embd)``;
    * a MoE layer: gate, up and SiLU(gate)*up of the chosen experts, their down outputs and
      the residual, ``4 u (3 k n_ff_exp + k n_embd + n_embd)`` (k = experts used), plus the
      attention mask, f16 ``2 u n_ctx`` with flash attention (f32 without), plus ``staged``:
      on a GPU, the host-resident weight that op offload copies in for a large-batch matmul
      (see ``staged_weight_bytes``);
    * without flash attention, also the attention itself: f32 scores of all heads and the
      mask, Q and the residual, ``4 u (n_ctx (n_head + 1) + 2 n_embd + 2 n_head key_length)``.

    ``head``: the output head runs here (not when the CPU only computes the layers it holds).
    Calibrated on CPU against llama.cpp's logged buffers (tests/test_advisor_calibration.py):
    within 1% for Qwen3-30B- and Mixtral-shaped layers with flash attention (llama.cpp's
    "auto" on CPU and CUDA), within 7% without it; tiny test shapes, whose attention is wider
    than their residual stream, within 15%. With ``staged`` on an H100: within 5% for the
    Qwen3-235B-A22B shape (real 0.59-0.62 GB, 0.33 without it; docs/benchmarks.md).
    """
    u = min(plan.n_ubatch, plan.n_batch, plan.n_ctx)
    n_ctx = plan.n_ctx * plan.n_parallel  # the cells a token's attention spans: all sequences'
    n_embd = model.arch_int("embedding_length")
    k = plan.n_expert_used or model.n_expert_used or 1
    n_ff = expert_ff_length(model) if model.n_expert else model.arch_int("feed_forward_length")
    if not model.n_expert:
        k = 1
    logits = 4 * u * (n_vocab(model) + 2 * n_embd) if head else 0
    ffn = 4 * u * (3 * k * n_ff + k * n_embd + n_embd) + staged
    shared = model.arch_int("expert_shared_count") * n_ff
    if shared and model.n_expert:
        # the shared expert's activations and output, alive next to the routed experts' sum
        ffn += 4 * u * (3 * shared + n_embd)
    layers = [ffn]
    if model.arch_int("leading_dense_block_count"):  # DeepSeek's, GLM's first dense layers
        layers.append(4 * u * (3 * model.arch_int("feed_forward_length") + 2 * n_embd))
    if is_mla(model):
        layers.append(mla_attention_bytes(model, u))
    if plan.flash_attn == "off":
        a = attention_shape(model)
        scores = 4 * u * (n_ctx * (a.n_head + 1) + 2 * n_embd + 2 * a.n_head * a.key_length)
        return max(logits, max(layers) + 4 * u * n_ctx, scores)
    # "auto" turns flash attention on wherever the backend has it (CPU, CUDA, Metal)
    return max(logits, max(layers) + 2 * u * n_ctx)


def is_mla(model: GGUFModel) -> bool:
    """Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2): llama.cpp's MLA GGUFs."""
    return bool(model.arch_int("attention.kv_lora_rank") and model.arch_int("attention.key_length_mla"))


def mla_attention_bytes(model: GGUFModel, u: int) -> int:
    """MLA's attention peak for a ubatch of ``u`` tokens (f32): per head, Q as projected
    (key_length_mla), its no-RoPE part absorbed into the latent (kv_lora_rank) and that joined
    to the RoPE part (kv_lora_rank + rope); plus 6.5 n_embd of residual stream, norms and
    latent projections, fitted on llama.cpp's CPU buffers for DeepSeek-V3 and Kimi-K2 shapes
    (64 and 128 heads, within 1%; tests/test_model_families.py)."""
    rank = model.arch_int("attention.kv_lora_rank")
    per_head = 2 * rank + model.arch_int("attention.key_length_mla") + model.arch_int("rope.dimension_count")
    n_embd = model.arch_int("embedding_length")
    return int(4 * u * (attention_shape(model).n_head * per_head + 6.5 * n_embd))


def layer_devices(plan: PlacementPlan, n_layer: int, gpus: list[str]) -> list[str]:
    """The device of each repeating layer and, last, of the output layer (index n_layer).

    Offloaded layers are spread over the GPUs by ``plan.tensor_split`` (equal shares when
    empty), as llama.cpp's layer split does; split_mode "none" keeps them on ``main_gpu``.
    """
    if not gpus:
        return [CPU_DEVICE] * (n_layer + 1)
    n_gpu = n_layer + 1 if plan.n_gpu_layers < 0 else min(plan.n_gpu_layers, n_layer + 1)
    first_gpu = n_layer + 1 - n_gpu
    if plan.split_mode == "none" or len(gpus) == 1:
        shares = [1.0 if i == min(plan.main_gpu, len(gpus) - 1) else 0.0 for i in range(len(gpus))]
    else:
        shares = list(plan.tensor_split[: len(gpus)]) or [1.0] * len(gpus)
        shares += [0.0] * (len(gpus) - len(shares))
    total = sum(shares) or 1.0
    bounds, acc = [], 0.0
    for share in shares:
        acc += share / total
        bounds.append(acc)
    devices = []
    for layer in range(n_layer + 1):
        if layer < first_gpu:
            devices.append(CPU_DEVICE)
            continue
        position = (layer - first_gpu) / n_gpu
        index = next((i for i, b in enumerate(bounds) if position < b), len(gpus) - 1)
        devices.append(gpus[index])
    return devices


OP_OFFLOAD_MIN_BATCH = 32  # ggml-cuda's offload_op: batches of at least this many tokens


def staged_weight_bytes(host_weights: list[int], plan: PlacementPlan) -> int:
    """What a GPU's compute buffer holds of host-resident weights: with op offload, llama.cpp
    computes a large-batch matmul whose weight lives in RAM (routed experts in RAM, whole
    layers in classic offload) on the GPU, copying the weight in as the op's input, one op at
    a time. So the largest such matrix (one layer's ffn_up_exps: 0.45 GB for the
    Qwen3-235B-A22B shape). ``host_weights``: bytes of each matrix in RAM."""
    if not plan.op_offload or min(plan.n_ubatch, plan.n_batch) < OP_OFFLOAD_MIN_BATCH:
        return 0
    return max(host_weights, default=0)


def tensor_device(name: str, layer: int | None, devices: list[str], rules: list) -> str:
    """Where llama.cpp puts tensor ``name``: an override first, then its layer's device."""
    override = first_matching_device(name, rules)
    if override is not None:
        return override
    if name.startswith("token_embd."):
        return CPU_DEVICE  # the input layer is never offloaded
    if layer is None:
        return devices[-1]  # output and output_norm belong to the output layer
    return devices[min(layer, len(devices) - 1)]


def router_name(layer: int) -> str:
    """The MoE router's tensor (its expert scores) of ``layer``."""
    return f"blk.{layer}.ffn_gate_inp.weight"


def _pack_device(layer: int, devices: list[str], rules: list, gpus: list[str]) -> str:
    # patch 0004 allocates a layer's pack where its router's weights are, else on the first GPU
    device = tensor_device(router_name(layer), layer, devices, rules)
    return device if device != CPU_DEVICE else gpus[0]


def expert_cache_pack_devices(model: GGUFModel, plan: PlacementPlan, layers: Iterable[int],
                              gpus: list[str]) -> dict[int, str]:
    """The GPU holding the hot-expert pack of each of ``layers`` (cached layers: routed experts
    in RAM) under ``plan``: its router's GPU, the first GPU for a router in RAM; none without
    a GPU."""
    if not gpus:
        return {}
    devices = layer_devices(plan, model.n_layer, gpus)
    rules = tensor_overrides(plan, model.n_layer)
    return {layer: _pack_device(layer, devices, rules, gpus) for layer in layers}


def expert_cache_packs(model: GGUFModel, plan: PlacementPlan, ram_experts: dict[int, int],
                       gpus: list[str]) -> dict[int, int]:
    """VRAM bytes of the hot-expert cache's pack per layer (none without a GPU or when off).
    ``ram_experts``: bytes of routed experts in RAM per layer."""
    if not gpus or not ram_experts or plan.expert_cache == "off" or not model.n_expert:
        return {}
    per_expert = max(ram_experts.values()) // model.n_expert
    slots = expert_cache_slots(plan, model.n_expert, per_expert, len(ram_experts))
    return {layer: slots * (size // model.n_expert) for layer, size in ram_experts.items() if slots}


# What ggml's AMX layout adds to a repacked 2D matrix, per type: (values per block, bytes added
# per block): Q8_0's int32 compensation for the u8 x s8 dot, the K quants' unpacked scales
# (ggml-cpu/amx/mmq.cpp get_row_size; the other AMX types keep their size).
AMX_EXTRA = {"Q8_0": (32, 4), "Q4_K": (256, 4), "Q5_K": (256, 4), "IQ4_XS": (256, 2)}


def amx_repacked_extra(t: TensorEntry) -> int:
    """Bytes the AMX buffer adds to ``t`` when llama.cpp repacks it there: 2D matrices only
    (engine patch 0006), whose rows split into 32-row tiles and whose row length fits the
    type's block; the input embeddings are read by row, never repacked."""
    extra = AMX_EXTRA.get(t.type_name)
    if extra is None or len(t.shape) != 2 or t.name.startswith("token_embd."):
        return 0
    values, added = extra
    row, rows = t.shape
    if row % values or rows % 32:
        return 0
    return row // values * rows * added


def memory_by_device(model: GGUFModel, plan: PlacementPlan,
                     gpus: list[str] | None = None, amx: bool = False) -> list[DeviceMemory]:
    """Bytes per device for ``model`` loaded with ``plan``: CPU first, then each GPU.

    ``gpus`` are the GPU device names in llama.cpp's order; none (or an empty list) models a
    CPU-only machine, where every byte is in RAM whatever the plan says. ``amx``: the CPU has
    AMX, so that a CPU-only load repacks its quantized matrices into AMX's larger layout.
    """
    gpus = list(gpus or [])
    n_layer = model.n_layer
    devices = layer_devices(plan, n_layer, gpus)
    rules = tensor_overrides(plan, n_layer) if gpus else []
    result = {name: DeviceMemory(name) for name in [CPU_DEVICE, *gpus]}

    def slot(device: str) -> DeviceMemory:
        return result.setdefault(device, DeviceMemory(device))

    host_matrices = []  # weights in RAM that a GPU would stage for a large batch
    ram_experts: dict[int, int] = {}  # layer -> bytes of its routed experts in RAM
    repack_for_amx = amx and plan.repack and not gpus and plan.expert_stream == "off"
    for t in model.loaded_tensors:
        device = tensor_device(t.name, t.layer, devices, rules)
        slot(device).weights += t.n_bytes + (amx_repacked_extra(t) if repack_for_amx else 0)
        if device == CPU_DEVICE and len(t.shape) >= 2 and not t.name.startswith("token_embd."):
            host_matrices.append(t.n_bytes)
        if device == CPU_DEVICE and t.tensor_class == "routed_experts" and t.layer is not None:
            ram_experts[t.layer] = ram_experts.get(t.layer, 0) + t.n_bytes
    for layer, pack in expert_cache_packs(model, plan, ram_experts, gpus).items():
        slot(_pack_device(layer, devices, rules, gpus)).weights += pack
    kv = kv_bytes_by_layer(model, plan.n_ctx * plan.n_parallel, plan.type_k, plan.type_v,
                           n_ubatch=min(plan.n_ubatch, plan.n_batch), n_parallel=plan.n_parallel)
    for layer, layer_kv in enumerate(kv):
        slot(devices[layer]).kv += layer_kv
    on_gpu = [d for d in dict.fromkeys(devices) if d != CPU_DEVICE]
    if on_gpu:
        gpu_compute, host_compute = gpu_compute_buffers(model, plan, host_matrices)
        for device in on_gpu:  # each GPU as if it ran every layer: at most what it needs
            slot(device).compute += gpu_compute
        slot(CPU_DEVICE).compute += host_compute
    else:
        slot(CPU_DEVICE).compute += compute_buffer_bytes(model, plan)
    return list(result.values())


def gpu_compute_buffers(model: GGUFModel, plan: PlacementPlan, host_matrices: list[int]) -> tuple[int, int]:
    """A GPU's compute buffer and the pinned host one beside it (CUDA_Host), in bytes.

    llama.cpp's CUDA graph allocator replayed for the model's architecture and placement
    (app/advisor/compute_buffer.py: exact where a recording fits). Else the CPU's formula with
    the largest host matrix op offload copies in, and on the host the graph's inputs: the token
    embeddings twice (the input tensor and the looked-up rows, f32) and the f16 attention mask.
    """
    recorded = cuda_compute_buffers(model, plan)
    if recorded is not None:
        return recorded.gpu, recorded.host
    # Not recorded: weights in RAM computed on the CPU (op offload off, ubatches under 32
    # tokens), experts streamed from the SSD. The GPU holds what it would with everything on
    # it, less the MoE it does not run; the CPU what a CPU-only run holds.
    all_on_gpu = replace(plan, experts_in_ram="none", overrides=[], n_gpu_layers=-1, expert_stream="off")
    on_gpu = cuda_compute_buffers(model, all_on_gpu)
    staged = staged_weight_bytes(host_matrices, plan)
    gpu = on_gpu.gpu if on_gpu else compute_buffer_bytes(model, plan, staged)
    u = min(plan.n_ubatch, plan.n_batch, plan.n_ctx)
    inputs = 8 * u * model.arch_int("embedding_length") + 2 * u * plan.n_ctx * plan.n_parallel
    return gpu, max(inputs, compute_buffer_bytes(model, plan, head=False) if host_matrices else 0)
