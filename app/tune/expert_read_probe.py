"""The kernel probe: time llama.cpp's own CPU kernels on routed experts by decoding, so that the
speed model reads this machine's figure instead of estimating it from the numpy RAM probe
(app/hardware/expert_read.py says why).

A synthetic model with Qwen3-30B-A3B's layer shapes (two layers, uniform routing, a small
vocabulary so that the output head counts little; 0.7 GB, far past any CPU's last-level cache)
is decoded in the engine with 2 and then 8 experts chosen a token (the model's
``expert_used_count`` overridden at load), the routed experts on the CPU in the file's layout,
as beside a GPU (with one: the rest of each layer on the GPU, llama.cpp's --cpu-moe; without:
everything on the CPU, repacking off). The token's time grows by six experts a
layer between the two; an expert's bytes over its share of that growth is the rate. What a
layer or a token costs beside its experts cancels out. bench/cpu_moe_decode.py fits the same
from nine points; two keep the probe to about half a minute.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from app.engine.client import EngineClient
from app.engine.llama_params import default_threads
from app.engine.placement import PlacementPlan
from app.errors import EngineError
from app.gguf.info import GGUFModel, read_model
from app.hardware.expert_read import ExpertReadRate, cached_expert_read, record_expert_read
from app.hardware.pending_writes import pending_write_bytes, settle_pending_writes
from app.hardware.probe_cache import cpu_key
from app.synthetic import SyntheticSpec, write_synthetic_model
from app.synthetic.spec import EXPERT_QUANT_TYPES
from app.tune.measure import Measurer, TuneCancelled, Workload

log = logging.getLogger("moedesk.tune")
REFERENCE_TYPE = "Q4_0"  # the probe's experts (the synthetic models' type)
PROBE_TYPES = [q for q in EXPERT_QUANT_TYPES if q not in (REFERENCE_TYPE, "F16")]  # timed against it
EXPERTS_USED = (2, 8)
PROBE_LAYERS = 2
DECODE_TOKENS = 48
ROUNDS = 3  # each count of experts loaded this often, interleaved; the medians count (a host's
# CPU compute for one graph varied by half from load to load on the H100)


class ProbeError(Exception):
    """The probe could not measure (the engine failed, or the timings did not separate)."""


def probe_spec(quant: str = REFERENCE_TYPE) -> SyntheticSpec:
    """The probe's model, its routed experts in ``quant`` (the writer's EXPERT_QUANT_TYPES)."""
    return SyntheticSpec.preset("qwen3-30b-a3b", n_layer=PROBE_LAYERS, n_vocab=512, routing="uniform",
                                expert_quant="" if quant == REFERENCE_TYPE else quant)


def expert_types(model: GGUFModel) -> list[str]:
    """The types of ``model``'s routed experts the probe can time (other than its own)."""
    types = {t.type_name for t in model.tensors if t.tensor_class == "routed_experts"}
    return sorted(q for q in types if q in PROBE_TYPES)


def probe_plan(experts_used: int, threads: int, has_gpu: bool) -> PlacementPlan:
    """The probe's placement: the routed experts on the CPU in the file's layout."""
    # the context holds the measurer's calibration prompt (~650 tokens)
    base = PlacementPlan(n_ctx=1024, n_threads=threads, n_expert_used=experts_used, repack=False)
    if has_gpu:  # llama.cpp's --cpu-moe (its host buffer keeps the file's layout anyway)
        return replace(base, experts_in_ram="all", split_mode="none")
    return replace(base, n_gpu_layers=0)


def engine_has_gpu(client: EngineClient) -> bool:
    return any(d.kind == "gpu" for d in client.info().devices)


def measure_expert_read(client: EngineClient, *, threads: int | None = None,
                        spec: SyntheticSpec | None = None, folder: Path | None = None,
                        decode_tokens: int = DECODE_TOKENS, rounds: int = ROUNDS,
                        has_gpu: bool | None = None,
                        progress: Callable[[str], None] = lambda _line: None,
                        cancel: threading.Event | None = None) -> ExpertReadRate:
    """Run the probe on ``client``'s engine (its model is unloaded) and return the rate; the
    model is written to a temporary folder in ``folder`` (default: the system's) and removed.
    ``has_gpu``: whether the engine has one (None: ask it). ``cancel`` set stops it between
    runs (TuneCancelled)."""
    spec = spec or probe_spec()
    threads = threads or default_threads()
    if has_gpu is None:
        has_gpu = engine_has_gpu(client)
    seconds: dict[int, list[float]] = {k: [] for k in EXPERTS_USED}
    with tempfile.TemporaryDirectory(prefix="moedesk-kernel-probe-", dir=folder) as tmp:
        progress(f"writing a {spec.n_layer}-layer synthetic model")
        (model,) = write_synthetic_model(Path(tmp) / "expert-read-probe.gguf", spec)
        info = read_model(model)
        # the model just written (and a download before it) is written out meanwhile otherwise
        if not settle_pending_writes(progress, lambda: cancel is not None and cancel.is_set()):
            log.warning("kernel probe: timing with %.1f GB of disk writes pending",
                        (pending_write_bytes() or 0) / 1e9)
        measurer = Measurer(client, model, cancel=cancel)
        workload = Workload(prefill_tokens=(), decode_tokens=decode_tokens)
        try:
            for round_ in range(rounds):
                for k in EXPERTS_USED:
                    progress(f"decoding with {k} experts a token (round {round_ + 1} of {rounds})")
                    result = measurer.measure(f"{k} experts", probe_plan(k, threads, has_gpu), workload)
                    if not result.ok or result.decode_tps <= 0:
                        raise ProbeError(f"the engine could not decode the probe's model: {result.error}")
                    seconds[k].append(1 / result.decode_tps)
        finally:
            try:
                client.unload()
            except EngineError:
                pass  # the engine is gone: the error above (or the caller's next call) says why
    low, high = (statistics.median(seconds[k]) for k in EXPERTS_USED)
    experts = (EXPERTS_USED[1] - EXPERTS_USED[0]) * len(info.moe_layers)
    if high <= low:
        raise ProbeError(f"a token took no longer with {EXPERTS_USED[1]} experts than with "
                         f"{EXPERTS_USED[0]} ({high * 1e3:.2f} against {low * 1e3:.2f} ms): the "
                         "machine was busy; close other programs and run it again")
    return ExpertReadRate(bytes_per_s=info.expert_bytes() * experts / (high - low), threads=threads,
                          quant=spec.expert_quant or spec.quant, cpu=cpu_key())


def type_speeds(client: EngineClient, quants: Iterable[str], reference: ExpertReadRate, *,
                folder: Path | None = None, has_gpu: bool | None = None,
                progress: Callable[[str], None] = lambda _line: None,
                cancel: threading.Event | None = None) -> Iterator[tuple[str, float]]:
    """Each of ``quants``' kernels against ``reference`` (the probe's own type, measured moments
    before with the same threads: a busy host's rate drifts between minutes): the probe run on
    each in turn, yielding (type, its rate over the reference's) as each is timed."""
    if has_gpu is None:
        has_gpu = engine_has_gpu(client)
    for quant in quants:
        rate = measure_expert_read(client, threads=reference.threads, spec=probe_spec(quant), folder=folder,
                                   has_gpu=has_gpu, cancel=cancel,
                                   progress=lambda line, q=quant: progress(f"{q}: {line}"))
        yield quant, rate.bytes_per_s / reference.bytes_per_s


def ensure_expert_read(client: EngineClient, threads: int | None = None, *, types: Iterable[str] = (),
                       folder: Path | None = None, progress: Callable[[str], None] = lambda _line: None,
                       cancel: threading.Event | None = None) -> ExpertReadRate | None:
    """The kernel rate for ``threads`` (default: the engine's): remembered for this machine, else
    measured now on ``client``'s engine and remembered; with ``types`` (a model's expert types:
    ``expert_types``) not timed here yet, their speeds too. Measured beside a GPU only, where the
    speed model reads it (experts in RAM keep the file's layout there); None when none is
    remembered and none was measured: no GPU, the probe could not measure (logged: what runs next
    does not need it), or it was cancelled."""
    threads = threads or default_threads()
    rate = cached_expert_read()
    if rate is not None and rate.threads != threads:
        rate = None
    if rate is not None and all(q in rate.type_speeds for q in types):
        return rate
    if not engine_has_gpu(client):
        return rate  # nothing runs: the speed model reads the rate beside a GPU only
    try:
        # the rate if none is remembered, and the types' reference either way
        reference = measure_expert_read(client, threads=threads, folder=folder, has_gpu=True,
                                        progress=progress, cancel=cancel)
        if rate is None:
            rate = reference
            record_expert_read(rate)
        missing = [q for q in types if q not in rate.type_speeds]
        for quant, speed in type_speeds(client, missing, reference, folder=folder, has_gpu=True,
                                        progress=progress, cancel=cancel):
            rate = replace(rate, type_speeds={**rate.type_speeds, quant: speed})
            record_expert_read(rate)
    except ProbeError as exc:
        log.warning("kernel probe: %s", exc)
    except TuneCancelled:
        pass
    return rate
