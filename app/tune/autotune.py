"""Autotune: from the advisor's plan, measure a few candidate placements and settings with
short real runs, keep the fastest that fits the VRAM budget, remember it per model and machine.

The search is greedy, one knob at a time, in the order that matters most for a MoE with
experts in RAM: how many layers' experts stay on the GPU (decode reads them every token),
hot experts in VRAM instead of some whole layers' experts (engine patch 0004, where the
engine has it: app/advisor/cache_split.py's splits of that VRAM; then a cache refreshed as it
decodes, with either copy policy, from pinned memory), the KV cache type (q8_0
frees VRAM for more experts), CPU threads (the RAM-resident experts are multiplied on the
CPU), then the prefill knobs (a larger ubatch amortises the copy of RAM experts to the GPU
that llama.cpp's op offload makes per ubatch; pinned memory without mmap speeds that copy;
op offload itself), then flash attention. Decode t/s decides; a candidate
that keeps decode within 2% and prefills faster also wins; none wins that prefills more than 2%
slower than the start plan (decode gains within noise must not cost prefill, e.g. turning op
offload off leaves decode alone and slows prefill several-fold). A candidate that re-fits the
experts to the budget (q8_0 KV cache, larger ubatch) and turns out over it for real is tried
once more with one layer's experts less on the GPU. A candidate that beats the best plan so
far is measured again, and so is the best plan, right before it (candidate, best, candidate):
it wins only if it wins again, so that a lucky run (one run of a placement scatters by up to
+-50% on the H100 with experts in RAM) does not steer the search; the figures kept are the
medians of each placement's runs. Bounded by a time limit (a confirmation under way
finishes) and cancellable; a cancelled run keeps what it found.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from app.engine.placement import ExpertCachePolicy, PlacementPlan, copies_cap_text
from app.engine.protocol import from_wire, to_wire
from app.gguf.info import GGUFModel
from app.paths import cache_dir
from app.tune.measure import Measurement, Measurer, TuneCancelled, Workload
from app.tune.rounds import median_measurement, plan_key
from app.tune.strategies import Budget, cache_split_plans, first_n_in_ram, one_layer_less, with_experts_in_ram

DECODE_TOLERANCE = 0.02  # decode within 2% counts as a tie, decided by prefill
TUNE_WORKLOAD = Workload(prefill_tokens=(512,), decode_tokens=64, repeats=2)


@dataclass
class TuneProgress:
    done: int  # candidates measured so far
    label: str  # the candidate being measured now
    best: Measurement | None
    elapsed: float
    last: Measurement | None = None  # the run just finished


@dataclass
class TuneResult:
    best: Measurement
    tried: list[Measurement] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None  # "time limit" or "cancelled" when the search ended early


def better(candidate: Measurement, best: Measurement | None, prefill_floor: float = 0.0) -> bool:
    """Whether ``candidate`` should replace ``best``: faster decode (deep in the context when
    the workload measured it), or a decode tie with faster prefill. Candidates that failed,
    broke the budget or prefill slower than ``prefill_floor`` never win."""
    if not candidate.ok or candidate.prefill < prefill_floor:
        return False
    if best is None or not best.ok:
        return True
    if candidate.decode > best.decode * (1 + DECODE_TOLERANCE):
        return True
    return (candidate.decode >= best.decode * (1 - DECODE_TOLERANCE)
            and candidate.prefill > best.prefill * (1 + DECODE_TOLERANCE))


def _experts_in_ram_layers(plan: PlacementPlan, n_layer: int) -> int:
    if plan.experts_in_ram == "all":
        return n_layer
    if plan.experts_in_ram == "none":
        return 0
    return int(plan.experts_in_ram)


def candidates(model: GGUFModel, best: PlacementPlan, budget: Budget | None,
               physical_cores: int, stage: str) -> Iterator[tuple[str, PlacementPlan]]:
    """The candidates of one stage, built around the best plan so far."""
    n_layer = model.n_layer
    n = _experts_in_ram_layers(best, n_layer)
    if stage == "layers" and budget is not None:
        # the memory model keeps a margin: one or two more layers' experts may fit for real
        for fewer in (n - 1, n - 2):
            if fewer >= 0:
                yield f"experts of {fewer} layers in RAM", with_experts_in_ram(best, fewer, n_layer)
    elif stage == "expert cache" and budget is not None and best.expert_cache == "off" and not best.no_host:
        # around the layers whose experts are in RAM, wherever the plan put them (on several
        # GPUs, the first of each GPU's range: not a "first N layers" shortcut)
        yield from _cache_candidates(model, best, budget)
    elif stage == "cache copies" and best.expert_cache != "off":
        yield from _copy_policy_candidates(model, best)
    elif stage == "kv" and budget is not None and n > 0 and best.type_k == "f16":
        # only worth its small quality cost when the VRAM it frees brings experts back
        q8 = replace(best, type_k="q8_0", type_v="q8_0", flash_attn="on")
        yield "q8_0 KV cache", with_experts_in_ram(q8, first_n_in_ram(model, budget, q8), n_layer)
    elif stage == "threads" and (n > 0 or budget is None):  # threads matter where the CPU works
        options = (physical_cores, max(1, physical_cores - 2), max(1, physical_cores // 2))
        for threads in dict.fromkeys(options):
            if threads != (best.n_threads or physical_cores):
                yield f"{threads} threads", replace(best, n_threads=threads, n_threads_batch=threads)
    elif stage == "prefill":
        for ubatch in (1024, 2048, 4096):
            if ubatch > best.n_ubatch:
                plan = replace(best, n_ubatch=ubatch, n_batch=max(best.n_batch, ubatch))
                if budget is not None:
                    plan = with_experts_in_ram(plan, max(n, first_n_in_ram(model, budget, plan)), n_layer)
                yield f"ubatch {ubatch}", plan
        if best.use_mmap and n > 0:
            yield "no mmap (pinned host memory)", replace(best, use_mmap=False)
        if n > 0:
            yield "no op offload", replace(best, op_offload=not best.op_offload)
        if n > 0 and best.repack and not best.no_host and best.expert_cache == "off":
            # decode from RAM against prefill: the prefill floor decides (not with hot
            # experts: the cache copies them from the file's layout, which no_host gives up)
            yield "CPU weights repacked (no_host)", replace(best, no_host=True)
    elif stage == "flash":
        yield f"flash attention {'off' if best.flash_attn != 'off' else 'on'}", replace(
            best, flash_attn="off" if best.flash_attn != "off" else "on")


def _cache_candidates(model: GGUFModel, best: PlacementPlan,
                      budget: Budget) -> Iterator[tuple[str, PlacementPlan]]:
    """The splits of ``best``'s VRAM for routed experts with hot experts in VRAM (none when
    every routed expert is in VRAM)."""
    for name, plan in cache_split_plans(model, best, budget):
        yield f"hot experts in VRAM ({name}): {plan.expert_cache_slots} experts a layer", plan


def _copy_policy_candidates(model: GGUFModel, best: PlacementPlan) -> Iterator[tuple[str, PlacementPlan]]:
    """The dynamic cache's copy settings not measured yet, from pinned memory (the copies run
    beside decoding only from there; from the mapped file each token waits for them): thrifty,
    eager, and eager capped at one copy a cached layer and token. Which wins depends on whether
    the CPU's reads are bound by RAM, which the copies share, and on whether the link to the GPU
    carries eager's copies within the CPU's part of a token (the advisor's own cap, where it set
    one, is the plan these are measured against)."""
    in_ram = _experts_in_ram_layers(best, model.n_layer)
    cached = sum(1 for layer in model.moe_layers if layer < in_ram)
    settings: list[tuple[ExpertCachePolicy, int]] = [(p, 0) for p in typing.get_args(ExpertCachePolicy)]
    if cached:
        settings.append(("eager", cached))
    for policy, uploads in settings:
        if (best.expert_cache == "dynamic" and best.expert_cache_policy == policy
                and best.expert_cache_uploads == uploads):
            continue
        plan = replace(best, expert_cache="dynamic", expert_cache_policy=policy, expert_cache_uploads=uploads,
                       use_mmap=False)
        yield f"dynamic hot experts, {policy} copies{copies_cap_text(uploads)}, mmap off", plan


STAGES = ("layers", "expert cache", "cache copies", "kv", "threads", "prefill", "flash")
# stages whose candidates re-fit the experts to the budget with the memory model: one that
# turns out over the budget is worth one more try with a layer's experts less on the GPU
REFIT_STAGES = ("kv", "prefill")


def autotune(measurer: Measurer, model: GGUFModel, start: PlacementPlan, budget: Budget | None, *,
             physical_cores: int, time_limit: float = 240.0, workload: Workload | None = None,
             progress: Callable[[TuneProgress], None] | None = None,
             hot_experts: bool = False) -> TuneResult:
    """Measure ``start`` and the candidates around it; the fastest that fits wins.
    ``hot_experts``: the engine can keep hot experts in VRAM (BuildInfo.expert_cache_patch,
    with a GPU), so its splits are measured too."""
    workload = workload or TUNE_WORKLOAD
    t0 = time.monotonic()
    tried: list[Measurement] = []
    best: Measurement | None = None
    stopped: str | None = None
    prefill_floor = 0.0  # the start plan's prefill, less the tolerance
    runs: dict[str, list[Measurement]] = {}  # each placement's runs, by plan_key

    def measure(label: str, plan: PlacementPlan) -> Measurement:
        if progress:
            progress(TuneProgress(len(tried), label, best, time.monotonic() - t0,
                                  tried[-1] if tried else None))
        m = measurer.measure(label, plan, workload)
        tried.append(m)
        runs.setdefault(plan_key(plan), []).append(m)
        return m

    def pooled(m: Measurement) -> Measurement:
        return median_measurement(runs[plan_key(m.plan)], m.label)

    def run(label: str, plan: PlacementPlan) -> Measurement:
        """Measure a candidate and make it the best if it wins (twice); its first run."""
        nonlocal best, prefill_floor
        m = measure(label, plan)
        if best is None:  # the start plan: the search builds on it only if it ran
            best = m
            prefill_floor = m.prefill * (1 - DECODE_TOLERANCE) if m.ok else 0.0
            return m
        if not better(m, best, prefill_floor):
            return m
        # it must win twice: here, and against the best plan measured again right before it
        incumbent = best
        incumbent_again = measure(f"{incumbent.label}, again", incumbent.plan)
        again = measure(f"{label}, again", plan)
        best = pooled(m) if better(again, incumbent_again, prefill_floor) else pooled(incumbent)
        return m

    try:
        run("advisor's plan", start)
        for stage in STAGES:
            if stage in ("expert cache", "cache copies") and not hot_experts:
                continue
            if best is None or not best.ok:
                break  # nothing to build on: the start plan itself failed
            queue = [(label, plan, stage in REFIT_STAGES)
                     for label, plan in candidates(model, best.plan, budget, physical_cores, stage)]
            while queue:
                if time.monotonic() - t0 > time_limit:
                    stopped = "time limit"
                    break
                label, plan, may_refit = queue.pop(0)
                measured = run(label, plan)
                retry = one_layer_less(plan, model.n_layer) if may_refit else None
                if not measured.fits and retry is not None and retry != best.plan:
                    # the memory model put one layer's experts too many on the GPU for this
                    # setting (it is within 5%, not exact): the setting may still pay off
                    queue.insert(0, (f"{label}, one layer less", retry, False))
            if stopped:
                break
    except TuneCancelled:
        stopped = "cancelled"
    if best is None:
        best = tried[0] if tried else Measurement("nothing measured", start, error="cancelled")
    if progress:
        progress(TuneProgress(len(tried), "done", best, time.monotonic() - t0,
                              tried[-1] if tried else None))
    return TuneResult(best, tried, time.monotonic() - t0, stopped)


# --- remembered results --------------------------------------------------------------------


def machine_id(cpu_model: str, gpu: str | None) -> str:
    """What a tuned plan is tied to on this machine: its CPU and the GPU it was measured on."""
    return f"{cpu_model}|{gpu or 'no GPU'}"


def tune_key(model_path: Path, machine: str, vram_budget: int | None) -> str:
    """Identifies a (model file, machine, VRAM budget asked for; None: the whole GPU): a
    changed file, machine or budget tunes anew."""
    st = Path(model_path).stat()
    budget = f"{round(vram_budget / 1e9)} GB" if vram_budget else "all"
    ident = f"{Path(model_path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{machine}|{budget}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def _store_path() -> Path:
    return cache_dir() / "autotune.json"


def remembered(key: str) -> PlacementPlan | None:
    """The tuned plan saved for ``key``, if any (a damaged store counts as empty)."""
    try:
        entry = json.loads(_store_path().read_text())[key]
        return from_wire(PlacementPlan, entry["plan"], "plan")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember(key: str, result: TuneResult) -> None:
    """Save the winner for ``key`` (atomically: a crash leaves the old store intact)."""
    path = _store_path()
    try:
        store = json.loads(path.read_text())
        if not isinstance(store, dict):
            store = {}
    except (OSError, ValueError):
        store = {}
    store[key] = {"plan": to_wire(result.best.plan), "decode_tps": result.best.decode_tps,
                  "prefill_tps": result.best.prefill, "label": result.best.label,
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(store, indent=1))
    os.replace(tmp, path)
