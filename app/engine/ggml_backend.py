"""ctypes access to the parts of llama.cpp that llama-cpp-python does not bind.

* ggml's backend registry: which backends and devices this build has, their memory, and the
  buffer type of each device (what ``tensor_buft_overrides`` needs).
* MoE Desk's llama.cpp patch (app/engine/patches/): routed-expert counts and where each model
  tensor landed. Absent on an unpatched build; ``has_routing_patch()`` says which.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import llama_cpp.llama_cpp as llama_lib

DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


@dataclass(frozen=True)
class Device:
    handle: int
    name: str
    description: str
    kind: str


def _lib_dir() -> Path:
    return Path(llama_cpp.__file__).parent / "lib"


@functools.cache
def _ggml() -> ctypes.CDLL:
    """libggml (registry) and libggml-base (devices) are both loaded by libllama already."""
    lib_dir = _lib_dir()
    for name in ("libggml.so", "libggml.dylib", "ggml.dll"):
        if (lib_dir / name).exists():
            lib = ctypes.CDLL(str(lib_dir / name))
            break
    else:
        lib = llama_lib._lib  # static build: everything lives in libllama
    vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    signatures: dict[str, tuple[list[object], object]] = {
        "ggml_backend_reg_count": ([], sz),
        "ggml_backend_reg_get": ([sz], vp),
        "ggml_backend_reg_name": ([vp], cp),
        "ggml_backend_dev_count": ([], sz),
        "ggml_backend_dev_get": ([sz], vp),
        "ggml_backend_dev_name": ([vp], cp),
        "ggml_backend_dev_description": ([vp], cp),
        "ggml_backend_dev_type": ([vp], ctypes.c_int),
        "ggml_backend_dev_memory": ([vp, ctypes.POINTER(sz), ctypes.POINTER(sz)], None),
        "ggml_backend_dev_buffer_type": ([vp], vp),
        "ggml_backend_dev_host_buffer_type": ([vp], vp),
        "ggml_backend_dev_backend_reg": ([vp], vp),
        "ggml_backend_reg_get_proc_address": ([vp, cp], vp),
        "ggml_backend_buft_name": ([vp], cp),
    }
    for fn, (argtypes, restype) in signatures.items():
        func = getattr(lib, fn)
        func.argtypes = argtypes
        func.restype = restype
    return lib


@functools.cache
def _patched() -> ctypes.CDLL | None:
    lib = llama_lib._lib
    if not hasattr(lib, "llama_moe_routing_enable"):
        return None
    vp = ctypes.c_void_p
    lib.llama_moe_routing_enable.argtypes = [vp, ctypes.c_bool]
    lib.llama_moe_routing_enable.restype = ctypes.c_bool
    lib.llama_moe_routing_counts.argtypes = [vp, ctypes.POINTER(ctypes.c_uint64), ctypes.c_int64]
    lib.llama_moe_routing_counts.restype = ctypes.c_int64
    lib.llama_moe_routing_reset.argtypes = [vp]
    lib.llama_moe_routing_reset.restype = None
    lib.llama_model_tensor_buft_name.argtypes = [vp, ctypes.c_char_p]
    lib.llama_model_tensor_buft_name.restype = ctypes.c_char_p
    return lib


@functools.cache
def _cache_patched() -> ctypes.CDLL | None:
    """Patch 0004 (expert cache, routing repeats), or None on a build without it."""
    lib = _patched()
    # (the copies' query came with the scored policy's set_policy: older builds of the patch
    # take other arguments; installers/install.py rebuilds the engine when the patches change)
    if lib is None or not hasattr(lib, "llama_moe_cache_copies_beside_decoding"):
        return None
    vp, u64p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)
    i32, i32p = ctypes.c_int32, ctypes.POINTER(ctypes.c_int32)
    lib.llama_moe_routing_repeats.argtypes = [vp, u64p, u64p, i32]
    lib.llama_moe_routing_repeats.restype = ctypes.c_bool
    lib.llama_moe_cache_init.argtypes = [vp, i32p, i32, ctypes.c_bool]
    lib.llama_moe_cache_init.restype = ctypes.c_int64
    lib.llama_moe_cache_set_experts.argtypes = [vp, i32, i32p, i32]
    lib.llama_moe_cache_set_experts.restype = ctypes.c_bool
    lib.llama_moe_cache_set_policy.argtypes = [vp, i32, i32, ctypes.c_float, ctypes.c_float]
    lib.llama_moe_cache_set_policy.restype = None
    lib.llama_moe_cache_stats.argtypes = [vp, u64p, u64p, ctypes.POINTER(ctypes.c_uint8), i32]
    lib.llama_moe_cache_stats.restype = ctypes.c_int64
    lib.llama_moe_cache_free.argtypes = [vp]
    lib.llama_moe_cache_free.restype = None
    lib.llama_moe_cache_copies_beside_decoding.argtypes = [vp]
    lib.llama_moe_cache_copies_beside_decoding.restype = ctypes.c_bool
    if hasattr(lib, "llama_moe_cache_experts_from_vram"):  # (builds of the patch before it: 0)
        lib.llama_moe_cache_experts_from_vram.argtypes = [vp]
        lib.llama_moe_cache_experts_from_vram.restype = ctypes.c_int64
    return lib


def has_cache_patch() -> bool:
    """Whether this engine build can keep hot experts in VRAM (patch 0004)."""
    return _cache_patched() is not None


def has_routing_patch() -> bool:
    return _patched() is not None


def backends() -> list[str]:
    lib = _ggml()
    return [lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)).decode()
            for i in range(lib.ggml_backend_reg_count())]


def devices() -> list[Device]:
    lib = _ggml()
    found = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        found.append(Device(
            handle=dev,
            name=lib.ggml_backend_dev_name(dev).decode(),
            description=lib.ggml_backend_dev_description(dev).decode(),
            kind=DEVICE_KINDS.get(lib.ggml_backend_dev_type(dev), "accel"),
        ))
    return found


def device_memory(device: Device) -> tuple[int, int]:
    """(free, total) bytes of a device, as its backend reports them."""
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    _ggml().ggml_backend_dev_memory(device.handle, ctypes.byref(free), ctypes.byref(total))
    return free.value, total.value


def buffer_type(device_name: str) -> int:
    """The default buffer type of a device by name ("CPU", "CUDA0", ...)."""
    for device in devices():
        if device.name == device_name:
            return int(_ggml().ggml_backend_dev_buffer_type(device.handle))
    raise KeyError(device_name)


# The CPU backend's optional "ggml_backend_dev_get_extra_bufts": a NULL-terminated array.
_ExtraBuftsFn = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)


@functools.cache
def host_buffer_types() -> frozenset[str]:
    """Names of the buffer types, beside the CPU's own, whose memory is the host's RAM: each
    device's pinned host buffer type ("CUDA_Host") and the CPU's extra buffer types that hold
    weights repacked for its kernels ("CPU_REPACK", and "AMX" on CPUs with AMX)."""
    lib = _ggml()
    names: set[str] = set()
    for device in devices():
        host = lib.ggml_backend_dev_host_buffer_type(device.handle)
        if host:
            names.add(lib.ggml_backend_buft_name(host).decode())
        if device.kind != "cpu":
            continue
        reg = lib.ggml_backend_dev_backend_reg(device.handle)
        address = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
        if not address:
            continue
        extra = _ExtraBuftsFn(address)(device.handle)
        index = 0
        while extra and extra[index]:
            names.add(lib.ggml_backend_buft_name(extra[index]).decode())
            index += 1
    return frozenset(names)


# --- the patch's functions ----------------------------------------------------------------


def routing_enable(ctx: int, enable: bool) -> bool:
    lib = _patched()
    return bool(lib and lib.llama_moe_routing_enable(ctx, enable))


def routing_counts(ctx: int, n_layer: int, n_expert: int) -> tuple[int, list[list[int]]]:
    """(tokens counted, counts[layer][expert]); tokens is -1 if capture was never enabled."""
    lib = _patched()
    if lib is None:
        return -1, []
    buf = (ctypes.c_uint64 * (n_layer * n_expert))()
    tokens = lib.llama_moe_routing_counts(ctx, buf, n_layer * n_expert)
    flat = list(buf)
    return int(tokens), [flat[i * n_expert:(i + 1) * n_expert] for i in range(n_layer)]


def routing_reset(ctx: int) -> None:
    """Set the routing counts back to zero."""
    lib = _patched()
    if lib is not None:
        lib.llama_moe_routing_reset(ctx)


def tensor_buffer_type(model: int, name: str) -> str | None:
    """Name of the buffer type holding a model tensor ("CUDA0", "CPU_REPACK", ...)."""
    lib = _patched()
    if lib is None:
        return None
    value = lib.llama_model_tensor_buft_name(model, name.encode())
    return value.decode() if value else None


def routing_repeats(ctx: int, n_layer: int) -> tuple[list[int], list[int]] | None:
    """Per layer: selections the token before had made too, and the tokens compared (patch
    0004); None without the patch or before routing capture was enabled."""
    lib = _cache_patched()
    if lib is None:
        return None
    repeats, rows = (ctypes.c_uint64 * n_layer)(), (ctypes.c_uint64 * n_layer)()
    if not lib.llama_moe_routing_repeats(ctx, repeats, rows, n_layer):
        return None
    return list(repeats), list(rows)


def cache_init(ctx: int, slots_per_layer: list[int], allow_host: bool = False) -> int:
    """Keep slots_per_layer[il] experts of each RAM layer in VRAM: the bytes it holds (0: no
    layer could be cached, -1: no routed experts). Needs has_cache_patch()."""
    lib = _cache_patched()
    assert lib is not None, "engine build without the expert cache patch"
    array = (ctypes.c_int32 * len(slots_per_layer))(*slots_per_layer)
    return int(lib.llama_moe_cache_init(ctx, array, len(slots_per_layer), allow_host))


def cache_set_experts(ctx: int, layer: int, experts: list[int]) -> bool:
    """Make ``experts`` (most wanted first) the experts of ``layer`` held in VRAM."""
    lib = _cache_patched()
    assert lib is not None
    array = (ctypes.c_int32 * max(len(experts), 1))(*experts)
    return bool(lib.llama_moe_cache_set_experts(ctx, layer, array, len(experts)))


def cache_set_policy(ctx: int, max_uploads: int, per_layer: int, half_life: float, margin: float) -> None:
    """Refresh the resident experts from routing (max_uploads per ubatch, per_layer a layer;
    max_uploads 0: static): an expert replaces a held one when its selections, each halved
    after ``half_life`` tokens, outnumber the held one's by more than ``margin``."""
    lib = _cache_patched()
    assert lib is not None
    lib.llama_moe_cache_set_policy(ctx, max_uploads, per_layer, half_life, margin)


def cache_copies_beside_decoding(ctx: int) -> bool:
    """Whether the dynamic cache's copies run while tokens decode (the experts in the GPU's
    pinned host memory) rather than between tokens, decoding waiting for them."""
    lib = _cache_patched()
    assert lib is not None
    return bool(lib.llama_moe_cache_copies_beside_decoding(ctx))


@dataclass(frozen=True)
class CacheStats:
    hits: list[int]  # per layer: selections served from VRAM by the cache
    misses: list[int]  # per layer: selections of cached layers served from RAM
    resident: list[list[int]]  # per layer: the experts held now
    uploads: int
    # experts a prompt's ubatches (computed on the GPU, llama.cpp copying the experts its tokens
    # chose) took from the packs instead of copying them from RAM
    from_vram: int = 0


def cache_stats(ctx: int, n_layer: int, n_expert: int) -> CacheStats | None:
    """The cache's counters, or None without a cache."""
    lib = _cache_patched()
    if lib is None:
        return None
    hits, misses = (ctypes.c_uint64 * n_layer)(), (ctypes.c_uint64 * n_layer)()
    resident = (ctypes.c_uint8 * (n_layer * n_expert))()
    uploads = lib.llama_moe_cache_stats(ctx, hits, misses, resident, n_layer)
    if uploads < 0:
        return None
    flags = list(resident)
    from_vram = getattr(lib, "llama_moe_cache_experts_from_vram", lambda _ctx: 0)(ctx)
    return CacheStats(
        hits=list(hits), misses=list(misses), uploads=int(uploads),
        resident=[[e for e in range(n_expert) if flags[il * n_expert + e]] for il in range(n_layer)],
        from_vram=int(from_vram),
    )


def cache_free(ctx: int) -> None:
    lib = _cache_patched()
    if lib is not None:
        lib.llama_moe_cache_free(ctx)


@functools.cache
def _stream_patched() -> ctypes.CDLL | None:
    """Patch 0005 (experts streamed from the SSD), or None on a build without it."""
    lib = _patched()
    if lib is None or not hasattr(lib, "llama_moe_stream_init"):
        return None
    vp, u64p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)
    i32, i32p = ctypes.c_int32, ctypes.POINTER(ctypes.c_int32)
    lib.llama_moe_stream_init.argtypes = [vp, i32p, i32, i32, i32]
    lib.llama_moe_stream_init.restype = ctypes.c_int64
    lib.llama_moe_stream_set_experts.argtypes = [vp, i32, i32p, i32]
    lib.llama_moe_stream_set_experts.restype = ctypes.c_bool
    lib.llama_moe_stream_stats.argtypes = [vp, u64p, u64p, i32, u64p, u64p]
    lib.llama_moe_stream_stats.restype = ctypes.c_int64
    lib.llama_moe_stream_free.argtypes = [vp]
    lib.llama_moe_stream_free.restype = None
    return lib


def has_stream_patch() -> bool:
    """Whether this engine build can stream experts from the SSD itself (patch 0005)."""
    return _stream_patched() is not None


# patch 0005's modes: the kernel asked ahead for the routed experts' pages; a RAM cache of
# experts read with parallel reads
STREAM_MODES = {"advise": 1, "cache": 2}


def stream_init(ctx: int, slots_per_layer: list[int], mode: str, io_threads: int) -> int:
    """Stream the routed experts of the layers with slots_per_layer[il] > 0 (cache mode: that
    many experts of the layer in RAM). Returns the RAM bytes the cache holds (0 in advise
    mode), -1 when no layer could be streamed. Needs has_stream_patch()."""
    lib = _stream_patched()
    assert lib is not None, "engine build without the streaming patch"
    array = (ctypes.c_int32 * len(slots_per_layer))(*slots_per_layer)
    return int(lib.llama_moe_stream_init(ctx, array, len(slots_per_layer), STREAM_MODES[mode], io_threads))


def stream_set_experts(ctx: int, layer: int, experts: list[int]) -> bool:
    """Read ``experts`` (most wanted first) of ``layer`` into its RAM cache now."""
    lib = _stream_patched()
    assert lib is not None
    array = (ctypes.c_int32 * max(len(experts), 1))(*experts)
    return bool(lib.llama_moe_stream_set_experts(ctx, layer, array, len(experts)))


@dataclass(frozen=True)
class StreamStats:
    hits: list[int]  # per layer: a ubatch's distinct experts found in the RAM cache
    misses: list[int]  # per layer: those read from the file
    bytes_read: int  # read for misses (cache) or asked of the kernel (advise)
    read_seconds: float  # the graph's wait for them
    fetches: int


def stream_stats(ctx: int, n_layer: int) -> StreamStats | None:
    """The stream's counters, or None without one."""
    lib = _stream_patched()
    if lib is None:
        return None
    hits, misses = (ctypes.c_uint64 * n_layer)(), (ctypes.c_uint64 * n_layer)()
    read, ns = ctypes.c_uint64(), ctypes.c_uint64()
    fetches = lib.llama_moe_stream_stats(ctx, hits, misses, n_layer, ctypes.byref(read), ctypes.byref(ns))
    if fetches < 0:
        return None
    return StreamStats(hits=list(hits), misses=list(misses), bytes_read=read.value,
                       read_seconds=ns.value / 1e9, fetches=int(fetches))


def stream_free(ctx: int) -> None:
    lib = _stream_patched()
    if lib is not None:
        lib.llama_moe_stream_free(ctx)
