"""The engine's hold on llama.cpp: load a model with a placement, chat, report where things are.

One model and one context at a time, with ``n_parallel`` sequences. ``load``, ``unload`` and
``run_chats`` block and run on the server's worker thread; ``admit`` (a chat for the batch
loop), ``stats`` and ``routing`` are cheap and safe to call from any thread meanwhile.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import psutil

from app.engine import expert_cache, expert_stream, ggml_backend, routing_profiles, telemetry
from app.engine.batch_loop import BatchLoop, ChatRequest
from app.engine.generation import ChatText
from app.engine.llama_params import context_params, model_params
from app.engine.placement import CPU_DEVICE, PlacementPlan
from app.engine.protocol import (
    Allocation,
    BuildInfo,
    DeviceInfo,
    EngineStats,
    ExpertCacheStats,
    LoadParams,
    LoadResult,
    ModelInfo,
    Progress,
    RoutingSnapshot,
    StorageStats,
    TensorClassPlacement,
)
from app.errors import (
    EngineError,
    LoadCancelledError,
    ModelFileError,
    NoModelLoadedError,
    OutOfMemoryError,
    PlacementError,
    TelemetryUnavailableError,
    UnsupportedArchitectureError,
)
from app.gguf import info as gguf_info
from app.gguf import validate as gguf_validate
from app.hardware.memory import detect_memory

log = logging.getLogger("moedesk.engine")

OOM_LOG = re.compile(r"out of memory|failed to allocate|unable to allocate|cannot allocate|"
                     r"failed to create context", re.IGNORECASE)
UNKNOWN_ARCH_LOG = re.compile(r"unknown model architecture: '([^']*)'")
# e.g. "llama_kv_cache:      CUDA0 KV buffer size =   384.00 MiB"
BUFFER_LOG = re.compile(r"(\S+)\s+(model|KV|compute|output|RS) buffer size =\s*([\d.]+) MiB")
BUFFER_KINDS = {"model": "weights", "KV": "kv_cache", "compute": "compute", "output": "output",
                "RS": "recurrent_state"}


class LlamaLog:
    """Keeps llama.cpp's recent log lines: its load errors say what went wrong."""

    DEBUG, CONT = 1, 5  # ggml_log_level: CONT continues the previous message

    def __init__(self) -> None:
        # INFO and above only: a big model's DEBUG lines (one per tensor) would push out the
        # buffer sizes and errors that matter
        self.lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._partial = ""
        self._level = 2
        self._lock = threading.Lock()
        self._callback = llama_cpp.llama_log_callback(self._on_log)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _on_log(self, level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        if level != self.CONT:
            self._level = level
        if self._level <= self.DEBUG:
            return
        with self._lock:
            self._partial += text.decode("utf-8", errors="replace")
            *done, self._partial = self._partial.split("\n")
            for line in done:
                self.lines.append(line)
                if level in (3, 4):  # GGML_LOG_LEVEL_WARN, _ERROR
                    log.warning("llama.cpp: %s", line)

    def mark(self) -> int:
        with self._lock:
            self.lines.append("\0mark")
            return len(self.lines)

    def since_mark(self) -> list[str]:
        with self._lock:
            lines = list(self.lines)
        for i in range(len(lines) - 1, -1, -1):
            if lines[i] == "\0mark":
                return lines[i + 1:] + ([self._partial] if self._partial else [])
        return lines


@dataclass
class LoadedModel:
    model: int
    ctx: int
    info: gguf_info.GGUFModel
    batch: BatchLoop
    expert_layers_on_gpu: set[int]
    telemetry: bool
    n_expert_used: int  # the model's own, or the plan's override
    remember_routing: bool = False  # the expert cache is on: its profile grows at unload
    stream_mode: str = "off"  # experts from the SSD: "advise" or "cache" when set up


class Runtime:
    """Owns llama.cpp in the engine process."""

    def __init__(self) -> None:
        llama_cpp.llama_backend_init()
        self.llama_log = LlamaLog()
        self.loaded: LoadedModel | None = None
        self.state = "idle"
        self._job_lock = threading.Lock()  # load, unload and chat never overlap
        # held while a context is freed and while routing counts are read from it, so a
        # routing request from another thread never reads a freed context
        self._ctx_lock = threading.Lock()

    # --- build ----------------------------------------------------------------------------

    def build_info(self) -> BuildInfo:
        devices = []
        for device in ggml_backend.devices():
            free, total = ggml_backend.device_memory(device)
            devices.append(DeviceInfo(name=device.name, description=device.description,
                                      kind=device.kind, memory_total=total, memory_free=free))
        return BuildInfo(
            llama_cpp_python=llama_cpp.__version__,
            backends=ggml_backend.backends(),
            devices=devices,
            routing_patch=ggml_backend.has_routing_patch(),
            system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
            expert_cache_patch=ggml_backend.has_cache_patch(),
        )

    # --- load -----------------------------------------------------------------------------

    def load(self, params: LoadParams, on_progress: Callable[[Progress], None],
             cancelled: threading.Event) -> LoadResult:
        with self._job_lock:
            self._unload_locked()
            self.state = "loading"
            try:
                return self._load_locked(params, on_progress, cancelled)
            finally:
                self.state = "idle"

    def _load_locked(self, params: LoadParams, on_progress: Callable[[Progress], None],
                     cancelled: threading.Event) -> LoadResult:
        t0 = time.perf_counter()
        plan = params.placement
        self._check_plan_numbers(plan)
        # ModelFileError / MissingShardError, and every header value llama.cpp would abort on
        # (app.gguf.validate)
        info = gguf_info.read_model(params.model)
        self._check_expert_count(info, plan)
        self._check_kv_fits(info, params)
        self._check_weights_fit(info, plan)
        self._check_stream_fits(info, params)

        def progress(fraction: float, _user: ctypes.c_void_p) -> bool:
            on_progress(Progress(stage="load", fraction=float(fraction)))
            return not cancelled.is_set()

        callback = llama_cpp.llama_progress_callback(progress)
        mparams = model_params(plan, info.n_layer, info.architecture, callback)
        cparams = context_params(plan)  # a bad setting fails here, before any loading
        self.llama_log.mark()
        model = llama_cpp.llama_model_load_from_file(str(info.shards[0]).encode(), mparams.params)
        if not model:
            if cancelled.is_set():
                raise LoadCancelledError("loading was cancelled; no model is loaded.", "")
            raise self._load_failure(info, "load the model")
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise self._load_failure(info, "create the context")

        try:
            placement, experts_on_gpu = self._placement_report(model, info)
            telemetry_on = False
            # the expert cache counts its hits and refreshes itself from routing capture; both
            # caches rank experts by the routing remembered at unload
            wants_routing = plan.expert_cache != "off" or plan.expert_stream == "cache"
            if (params.telemetry or wants_routing) and ggml_backend.has_routing_patch():
                telemetry_on = ggml_backend.routing_enable(ctx, True)
            cache = None
            if plan.expert_cache != "off":
                cache = expert_cache.setup(ctx, model, info, plan, experts_on_gpu, params.expert_profile)
                if not cache.available:
                    log.warning("hot experts in VRAM unavailable: %s", cache.reason)
            stream = None
            if plan.expert_stream != "off":
                stream = expert_stream.setup(ctx, info, plan, experts_on_gpu)
                log.info("%s", stream.describe())
            batch = BatchLoop(ctx, ChatText(model, info.chat_template), plan.n_parallel)
        except BaseException:
            llama_cpp.llama_free(ctx)
            llama_cpp.llama_model_free(model)
            raise
        n_expert_used = plan.n_expert_used or info.n_expert_used
        self.loaded = LoadedModel(model=model, ctx=ctx, info=info, batch=batch,
                                  expert_layers_on_gpu=experts_on_gpu, telemetry=telemetry_on,
                                  n_expert_used=n_expert_used,
                                  remember_routing=telemetry_on and (
                                      (cache is not None and cache.available)
                                      or (stream is not None and stream.available
                                          and stream.mode == "cache")),
                                  stream_mode=stream.mode if stream and stream.available else "off")
        on_progress(Progress(stage="ready", fraction=1.0))
        return LoadResult(
            model=ModelInfo(
                path=str(info.shards[0]), shards=[str(s) for s in info.shards],
                architecture=info.architecture, name=info.name, n_layer=info.n_layer,
                n_expert=info.n_expert, n_expert_used=n_expert_used, n_ctx_train=info.n_ctx_train,
                n_params=info.n_params, size_bytes=info.size_bytes,
                chat_template=info.chat_template is not None,
            ),
            placement=placement, expert_layers_on_gpu=sorted(experts_on_gpu),
            n_ctx=batch.n_ctx, load_seconds=time.perf_counter() - t0,
            telemetry=telemetry_on, allocations=self._allocations(), n_parallel=batch.n_seq,
            expert_cache=cache, expert_stream=stream,
        )

    @staticmethod
    def _check_plan_numbers(plan: PlacementPlan) -> None:
        """Sizes llama.cpp takes as 32-bit numbers: a negative one would wrap to billions and
        fail deep in llama.cpp, where it reads as a damaged model file."""
        for name, least in (("n_ctx", 0), ("n_batch", 1), ("n_ubatch", 1), ("n_threads", 0),
                            ("n_threads_batch", 0)):
            value = getattr(plan, name)
            if not least <= value <= 2**31 - 1:
                meaning = " (0: the model's own)" if name == "n_ctx" else " (0: automatic)" \
                    if least == 0 else ""
                raise PlacementError(f"the placement's {name} is {value:,}; it must be a whole "
                                     f"number from {least}{meaning} to {2**31 - 1:,}.",
                                     "Choose a positive number.")

    @staticmethod
    def _check_expert_count(info: gguf_info.GGUFModel, plan: PlacementPlan) -> None:
        """llama.cpp aborts the process (GGML_ASSERT) on an active-expert count outside
        1..n_expert, so it is checked here, before llama.cpp sees it: the model's own count by
        read_model (app.gguf.validate), a placement's override with the same rule here."""
        used = plan.n_expert_used
        if used is not None and gguf_validate.expert_count_problem(info.n_expert, used):
            if not info.n_expert:
                raise PlacementError(f"{used} active experts per token asked for, but this "
                                     "model has no routed experts.",
                                     "Leave the active experts at the model's own.")
            raise PlacementError(
                f"{used} active experts per token asked for, but this model has {info.n_expert} "
                "experts per layer.",
                f"Choose between 1 and {info.n_expert} (the model's own is {info.n_expert_used}).")

    def _check_kv_fits(self, info: gguf_info.GGUFModel, params: LoadParams) -> None:
        """Refuse a context whose KV cache cannot fit anywhere, before llama.cpp tries.

        Linux overcommits memory: an oversized allocation may succeed and the OOM killer end
        the engine later. A clear refusal beats that.
        """
        plan = params.placement
        cells = plan.n_ctx * plan.n_parallel  # each parallel sequence has n_ctx of its own
        need = gguf_info.kv_bytes(info, cells, plan.type_k, plan.type_v,
                                  n_ubatch=plan.n_ubatch, n_parallel=plan.n_parallel)
        capacity = sum(m.total for m in telemetry.device_memory())
        if need > capacity:
            what = f"{plan.n_ctx:,} tokens" + (
                f" for each of {plan.n_parallel} parallel sequences" if plan.n_parallel > 1 else "")
            raise OutOfMemoryError(
                f"a context of {what} needs a {need / 2**30:.1f} GiB KV cache; "
                f"this machine has {capacity / 2**30:.1f} GiB of RAM and VRAM together.",
                "Lower the context size or the parallel sequences, or use a quantized KV cache "
                "(q8_0).",
            )

    @staticmethod
    def _check_weights_fit(info: gguf_info.GGUFModel, plan: PlacementPlan) -> None:
        """Refuse a load without a GPU whose weights would all be copied into too little RAM.

        Without a GPU, llama.cpp repacks the weights for its CPU kernels (or, without mmap,
        reads them in): copies the OS cannot page back from the file, so a model larger than
        RAM and swap cannot run that way; only weights left in the mapped file stream from the
        SSD. Overcommit would let the copying start and the OOM killer end the engine later.
        (With a GPU, llama.cpp keeps weights in RAM in the mapped file or pinned memory.)
        """
        if any(d.kind in ("gpu", "igpu") for d in ggml_backend.devices()):
            return
        if plan.use_mmap and not plan.repack:
            return
        capacity = psutil.virtual_memory().total + psutil.swap_memory().total
        if info.size_bytes <= capacity:
            return
        how = "repacked for the CPU's kernels" if plan.use_mmap else "read in (mmap is off)"
        raise OutOfMemoryError(
            f"the model's {info.size_bytes / 2**30:.1f} GiB of weights would be copied into "
            f"memory ({how}), and this machine has {capacity / 2**30:.1f} GiB of RAM and swap.",
            "Load it with mmap on and repacking off (--no-repack; the advisor's plan does this) "
            "to stream the weights from the SSD, or pick a smaller quant.",
        )

    @staticmethod
    def _check_stream_fits(info: gguf_info.GGUFModel, params: LoadParams) -> None:
        """Refuse a streaming plan whose RAM cache cannot be held: the cache and the KV cache
        are memory the OS cannot drop (the weights in the mapped file it can, and reads again),
        so past the machine's memory (its cgroup limit, where lower) the OOM killer would end
        the engine mid-chat."""
        plan = params.placement
        if plan.expert_stream == "off":
            return
        if not plan.use_mmap:
            raise PlacementError("streaming experts from the SSD needs the model file mapped "
                                 "(mmap), and this plan turns mmap off.",
                                 "Turn mmap on in the plan, or stream nothing.")
        if plan.expert_stream != "cache":
            return
        # the RAM, or the process's cgroup limit where lower, as the advisor counts it
        memory = detect_memory(Path("/"), True, [])
        total = memory.total if memory else psutil.virtual_memory().total
        cells = (plan.n_ctx or info.n_ctx_train) * max(1, plan.n_parallel)
        kv = gguf_info.kv_bytes(info, cells, plan.type_k, plan.type_v,
                                n_ubatch=plan.n_ubatch, n_parallel=plan.n_parallel)
        # a floor for everything else the process holds (compute buffers, Python, the
        # non-expert weights' working set): below it the page cache thrashes anyway
        margin = max(2**30, total // 16)
        room = total - kv - margin
        if plan.expert_stream_bytes > room:
            raise OutOfMemoryError(
                f"the plan's {plan.expert_stream_bytes / 2**30:.1f} GiB RAM expert cache, the "
                f"{kv / 2**30:.1f} GiB KV cache and {margin / 2**30:.1f} GiB for the rest do not "
                f"fit this machine's {total / 2**30:.1f} GiB of memory.",
                f"Give the expert cache at most {max(room, 0) / 2**30:.1f} GiB "
                "(--expert-stream-size), or shorten the context.",
            )

    def _allocations(self) -> list[Allocation]:
        """The buffers llama.cpp reported allocating since the load began."""
        device_names = {d.name for d in ggml_backend.devices()}
        found = []
        for line in self.llama_log.since_mark():
            match = BUFFER_LOG.search(line)
            if match:
                buft, kind, mib = match.groups()
                found.append(Allocation(
                    kind=BUFFER_KINDS[kind],  # type: ignore[arg-type]
                    device=device_of_buffer_type(buft, device_names), buffer_type=buft,
                    bytes=round(float(mib) * 2**20),
                ))
        return found

    def _load_failure(self, info: gguf_info.GGUFModel, step: str) -> EngineError:
        lines = self.llama_log.since_mark()
        text = "\n".join(lines)
        tail = " | ".join(line.strip() for line in lines[-4:] if line.strip())
        unknown = UNKNOWN_ARCH_LOG.search(text)
        if unknown:
            return UnsupportedArchitectureError(
                f"this llama.cpp build does not support the '{unknown.group(1)}' architecture.",
                "Update MoE Desk (a newer llama.cpp may know it), or pick another model.",
            )
        if OOM_LOG.search(text):
            return OutOfMemoryError(
                f"not enough memory to {step} with this placement ({tail}).",
                "Put more routed experts in RAM, lower the context size, or pick a smaller quant.",
            )
        return ModelFileError(
            f"llama.cpp could not {step} from {info.shards[0].name} ({tail or 'no details'}).",
            "The file may be damaged or made for a newer llama.cpp; download it again.",
        )

    def _placement_report(self, model: int, info: gguf_info.GGUFModel
                          ) -> tuple[list[TensorClassPlacement], set[int]]:
        """Bytes per (tensor class, device) as llama.cpp placed them, and the layers whose
        routed experts sit in device memory."""
        if not ggml_backend.has_routing_patch():
            return [], set()
        device_names = {d.name for d in ggml_backend.devices()}
        sizes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        experts_on_gpu: set[int] = set()
        for tensor in info.tensors:
            buft = ggml_backend.tensor_buffer_type(model, tensor.name)
            if buft is None:
                continue  # tensors llama.cpp does not load (e.g. unused MTP layers)
            device = device_of_buffer_type(buft, device_names)
            entry = sizes[(tensor.tensor_class, device)]
            entry[0] += tensor.n_bytes
            entry[1] += 1
            if tensor.tensor_class == "routed_experts" and device != CPU_DEVICE:
                experts_on_gpu.add(tensor.layer)  # type: ignore[arg-type]
        report = [TensorClassPlacement(tensor_class=c, device=d, bytes=b, tensors=n)
                  for (c, d), (b, n) in sorted(sizes.items())]
        return report, experts_on_gpu

    # --- unload ---------------------------------------------------------------------------

    def unload(self) -> None:
        with self._job_lock:
            self._unload_locked()

    def _unload_locked(self) -> None:
        with self._ctx_lock:
            loaded, self.loaded = self.loaded, None
        if loaded is not None:
            loaded.batch.close()
            if loaded.remember_routing:
                self._remember_routing(loaded)
            llama_cpp.llama_free(loaded.ctx)
            llama_cpp.llama_model_free(loaded.model)

    @staticmethod
    def _remember_routing(loaded: LoadedModel) -> None:
        """Add this run's routing to the model's remembered profile (the expert cache ranks
        experts by it at the next load)."""
        tokens, counts = ggml_backend.routing_counts(loaded.ctx, loaded.info.n_layer, loaded.info.n_expert)
        if tokens <= 0:
            return
        try:
            routing_profiles.remember(loaded.info.shards[0], counts)
        except OSError as exc:  # a full or read-only disk: the next load warms up instead
            log.warning("could not remember the routing profile: %s", exc)

    # --- chat -----------------------------------------------------------------------------

    @property
    def n_parallel(self) -> int:
        """Chats the loaded model decodes at once (1 without a model)."""
        loaded = self.loaded
        return loaded.batch.n_seq if loaded is not None else 1

    def admit(self, request: ChatRequest) -> None:
        """Hand a chat to the loaded model's batch loop (any thread; it starts with the next
        ``run_chats`` step that has a free slot). NoModelLoadedError without a model."""
        self._require_model().batch.admit(request)

    def chats_pending(self) -> bool:
        """Chats admitted and not yet ended."""
        loaded = self.loaded
        return loaded is not None and loaded.batch.has_work()

    def run_chats(self) -> None:
        """Run the batch loop until every admitted chat has ended (the worker thread)."""
        with self._job_lock:
            loaded = self.loaded
            if loaded is None:
                return
            self.state = "generating"
            try:
                loaded.batch.run()
            finally:
                self.state = "idle"

    # --- live figures ---------------------------------------------------------------------

    def _require_model(self) -> LoadedModel:
        if self.loaded is None:
            raise NoModelLoadedError("no model is loaded.", "Load a model first.")
        return self.loaded

    def stats(self) -> EngineStats:
        loaded = self.loaded
        live = loaded.batch.live if loaded else None
        return EngineStats(
            state=self.state,  # type: ignore[arg-type]
            model=loaded.info.name if loaded else None,
            decode_tps=live.decode_tps if live else 0.0,
            prefill_tps=live.prefill_tps if live else 0.0,
            tokens_generated=live.tokens_generated if live else 0,
            memory=telemetry.device_memory(),
            rss=telemetry.process_rss(),
            n_parallel=loaded.batch.n_seq if loaded else 1,
            storage=self._storage_stats(loaded) if loaded else None,
            expert_cache=self._expert_cache_stats(loaded) if loaded else None,
        )

    def _expert_cache_stats(self, loaded: LoadedModel) -> ExpertCacheStats | None:
        with self._ctx_lock:
            if self.loaded is not loaded:
                return None
            cache = ggml_backend.cache_stats(loaded.ctx, loaded.info.n_layer, loaded.info.n_expert)
        if cache is None:
            return None
        return ExpertCacheStats(hits=sum(cache.hits), misses=sum(cache.misses), uploads=cache.uploads,
                                prompt_experts_from_vram=cache.from_vram)

    def _storage_stats(self, loaded: LoadedModel) -> StorageStats | None:
        meter = loaded.batch.storage
        if not meter.available:
            return None
        per_token, bps = meter.recent()
        hit_rate = read_bps = None
        with self._ctx_lock:
            if self.loaded is loaded:
                stream = ggml_backend.stream_stats(loaded.ctx, loaded.info.n_layer)
                if stream is not None:
                    found, looked = sum(stream.hits), sum(stream.hits) + sum(stream.misses)
                    hit_rate = found / looked if looked else None
                    # advise mode's reads happen in the kernel, after the node: not timed there
                    if loaded.stream_mode == "cache" and stream.read_seconds > 0 and sum(stream.misses):
                        read_bps = stream.bytes_read / stream.read_seconds
        return StorageStats(bytes_per_token=per_token, read_bps=bps, total_bytes=meter.total_bytes,
                            total_tokens=meter.total_tokens, ram_hit_rate=hit_rate,
                            stream_read_bps=read_bps)

    def routing(self) -> RoutingSnapshot:
        with self._ctx_lock:
            loaded = self._require_model()
            if not loaded.telemetry:
                raise TelemetryUnavailableError(
                    "routing telemetry is off for this model.",
                    "It needs a MoE model, telemetry requested at load, and the patched engine "
                    "build (installers/install.py).",
                )
            tokens, counts = ggml_backend.routing_counts(loaded.ctx, loaded.info.n_layer,
                                                         loaded.info.n_expert)
            cache = ggml_backend.cache_stats(loaded.ctx, loaded.info.n_layer, loaded.info.n_expert)
        return telemetry.routing_snapshot(
            counts, tokens, loaded.n_expert_used, loaded.info.moe_layers,
            loaded.expert_layers_on_gpu, cache,
        )


def device_of_buffer_type(buft: str, device_names: set[str]) -> str:
    """The device a buffer type's memory belongs to: "CPU" for all host memory
    (CPU, CPU_Mapped, CPU_REPACK, AMX, CUDA_Host pinned), else the GPU's own name."""
    if buft in device_names and buft != CPU_DEVICE:
        return buft
    if buft.startswith("CPU") or buft in ggml_backend.host_buffer_types():
        return CPU_DEVICE
    return buft

