"""The kernel probe: time llama.cpp's own CPU kernels on routed experts by decoding, so that the
speed model reads this machine's figure instead of estimating it from the numpy RAM probe
(app/hardware/expert_read.py says why).

Two synthetic models with Qwen3-30B-A3B's layer shapes (2 and 6 layers, uniform routing, a small
vocabulary so that the output head counts little; 0.7 and 2.0 GB, far past any CPU's last-level
cache) are decoded in the engine with 2 and then 8 experts chosen a token (the model's
``expert_used_count`` overridden at load), the routed experts on the CPU in the file's layout,
as beside a GPU (with one: the rest of each layer on the GPU, llama.cpp's --cpu-moe; without:
everything on the CPU, repacking off). A token's time grows by six experts a layer between the
two counts; the larger model's growth less the smaller's is four layers' worth of experts, and
an expert's bytes over its share of that is the rate. What a layer or a token costs beside its
experts cancels out, and so does a token's cost that grows with the experts chosen but not with
the layers: with one two-layer model that cost was in the rate, which read 0.7x what its host's
own 48-layer decodes implied on the thirty-third session's H100 host (64 against 85-94 GB/s),
and 6.1 / 7.3 / 8.1 GB/s at 2 / 4 / 8 layers on the dev machine, whose slope between layer
counts is 9.1 (docs/benchmarks.md, "Thirty-third session", which also has a run in another
sequence where the two-layer slope was not low: the cause is not known, the difference removes
it either way). bench/cpu_moe_decode.py fits the same from nine points; four keep the probe to
under a minute.

A third model (``wide``: the reference measurement) has experts four times as wide (32 a layer,
0.7 GB) and as many layers as the smaller: the difference of its slope and that model's is the
extra bytes alone, so it splits the time of an expert into its bytes and a cost of its own (the
thirty-fourth session: on the dev machine's two threads Qwen3-30B's 2.53 MiB experts streamed at
5.6-7.5 GB/s and experts of 5-10 MiB at 8.9-12.1; on an H100 host the probe read 67.8 GB/s on
the former and n-cpu-moe decodes of Qwen3-235B's 10.1 MiB experts implied 80-92). The speed
model takes the rate at each model's expert size (``ExpertReadRate.rate_for``).
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
PROBE_LAYERS = (2, 6)  # the rate is the difference between the two models' slopes
# the wide model: experts this many times as wide, in as many layers as the smallest model and
# fewer of them a layer (a model of 0.7 GB), whose slope less that model's is the bytes alone
WIDE_FACTOR = 4
WIDE_EXPERTS = 32
DECODE_TOKENS = 48
ROUNDS = 3  # each count of experts loaded this often, interleaved; the medians count (a host's
# CPU compute for one graph varied by half from load to load on the H100)


class ProbeError(Exception):
    """The probe could not measure (the engine failed, or the timings did not separate)."""


def probe_spec(quant: str = REFERENCE_TYPE) -> SyntheticSpec:
    """The probe's model, its routed experts in ``quant`` (the writer's EXPERT_QUANT_TYPES)."""
    return SyntheticSpec.preset("qwen3-30b-a3b", n_layer=PROBE_LAYERS[0], n_vocab=512, routing="uniform",
                                expert_quant="" if quant == REFERENCE_TYPE else quant)


def wide_spec(spec: SyntheticSpec, n_layer: int) -> SyntheticSpec:
    """The probe's model with ``WIDE_FACTOR`` times as wide experts, ``WIDE_EXPERTS`` a layer."""
    return replace(spec, n_layer=n_layer, n_ff_exp=spec.n_ff_exp * WIDE_FACTOR,
                   n_expert=min(spec.n_expert, WIDE_EXPERTS))


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
                        spec: SyntheticSpec | None = None, layers: tuple[int, ...] = PROBE_LAYERS,
                        folder: Path | None = None, decode_tokens: int = DECODE_TOKENS, rounds: int = ROUNDS,
                        has_gpu: bool | None = None, wide: bool = False,
                        progress: Callable[[str], None] = lambda _line: None,
                        cancel: threading.Event | None = None) -> ExpertReadRate:
    """Run the probe on ``client``'s engine (its model is unloaded) and return the rate; the
    models (``spec`` at each of ``layers``; one count: that model's slope alone, as the probe
    measured before the thirty-third session; ``wide``: and ``wide_spec``'s, for the cost an
    expert has beside its bytes) are written to a temporary folder in ``folder`` (default: the
    system's) and removed. ``has_gpu``: whether the engine has one (None: ask it). ``cancel``
    set stops it between runs (TuneCancelled)."""
    spec = spec or probe_spec()
    threads = threads or default_threads()
    if has_gpu is None:
        has_gpu = engine_has_gpu(client)
    first, last = min(layers), max(layers)
    specs: dict[int | str, SyntheticSpec] = {n: replace(spec, n_layer=n) for n in layers}
    if wide:
        specs["wide"] = wide_spec(spec, first)
    seconds: dict[tuple[int | str, int], list[float]] = {(n, k): [] for n in specs for k in EXPERTS_USED}
    with tempfile.TemporaryDirectory(prefix="moedesk-kernel-probe-", dir=folder) as tmp:
        models = {}
        for n, model_spec in specs.items():
            name = f"{n}-layer" if n != "wide" else f"{first}-layer wide-expert"
            progress(f"writing a {name} synthetic model")
            (path,) = write_synthetic_model(Path(tmp) / f"probe-{n}-layers.gguf", model_spec)
            models[n] = (path, read_model(path))
        # the models just written (and a download before them) are written out meanwhile otherwise
        if not settle_pending_writes(progress, lambda: cancel is not None and cancel.is_set()):
            log.warning("kernel probe: timing with %.1f GB of disk writes pending",
                        (pending_write_bytes() or 0) / 1e9)
        measurers = {n: Measurer(client, path, cancel=cancel) for n, (path, _info) in models.items()}
        workload = Workload(prefill_tokens=(), decode_tokens=decode_tokens)
        try:
            for round_ in range(rounds):
                for n, measurer in measurers.items():
                    for k in EXPERTS_USED:
                        what = f"{n} layers" if n != "wide" else f"{first} layers of wide experts"
                        progress(f"decoding {what}, {k} experts a token (round {round_ + 1} of {rounds})")
                        result = measurer.measure(f"{what}, {k} experts", probe_plan(k, threads, has_gpu),
                                                  workload)
                        if not result.ok or result.decode_tps <= 0:
                            raise ProbeError(f"the engine could not decode the probe's model: {result.error}")
                        seconds[(n, k)].append(1 / result.decode_tps)
        finally:
            try:
                client.unload()
            except EngineError:
                pass  # the engine is gone: the error above (or the caller's next call) says why
    low, high = EXPERTS_USED
    growth = {n: statistics.median(seconds[(n, high)]) - statistics.median(seconds[(n, low)]) for n in specs}
    moe = {n: len(info.moe_layers) for n, (_path, info) in models.items()}
    base_time, base_layers = (growth[first], moe[first]) if len(layers) > 1 else (0.0, 0)
    seconds_more, experts = growth[last] - base_time, (high - low) * (moe[last] - base_layers)
    if seconds_more <= 0 or experts <= 0:
        raise ProbeError(f"a token did not take longer with {high - low} more experts a layer in the larger "
                         f"model ({', '.join(f'{n} layers: {g * 1e3:+.2f} ms' for n, g in growth.items())}): "
                         "the machine was busy; close other programs and run it again")
    expert_bytes = models[last][1].expert_bytes()
    per_expert = seconds_more / experts
    rate = ExpertReadRate(bytes_per_s=expert_bytes / per_expert, threads=threads,
                          quant=spec.expert_quant or spec.quant, cpu=cpu_key(),
                          expert_weights=models[last][1].expert_weights())
    if not wide:
        return rate
    # the wide model has as many layers as the first: what a token costs beside its experts,
    # and what each expert costs beside its bytes, cancel in the difference of their slopes
    wide_per_expert = per_expert + (growth["wide"] - growth[first]) / ((high - low) * moe[first])
    wide_bytes = models["wide"][1].expert_bytes()
    if wide_per_expert <= per_expert:
        log.warning("kernel probe: %.1fx wider experts took no longer (%.0f against %.0f us); the cost "
                    "an expert has beside its bytes is not separated", wide_bytes / expert_bytes,
                    wide_per_expert * 1e6, per_expert * 1e6)
        return rate
    bytes_seconds = (wide_per_expert - per_expert) / (wide_bytes - expert_bytes)
    # below 0 when wide experts stream slower a byte (the spread of a busy host): none separated
    return replace(rate, expert_seconds=max(0.0, per_expert - bytes_seconds * expert_bytes))


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
                                        wide=rate is None, progress=progress, cancel=cancel)
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
