"""The benchmark report: llama.cpp's own strategies, the advisor's plan and the autotuned plan,
measured at one VRAM budget on the same engine, as a table and a CSV file; with
``CacheRows``, hot experts in VRAM too, their measured hit rate next to the predicted one."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from app.engine.placement import ExpertCacheMode, PlacementPlan
from app.gguf.info import GGUFModel
from app.tune.autotune import TUNE_WORKLOAD, TuneProgress, TuneResult, autotune
from app.tune.measure import Measurement, Measurer, Workload
from app.tune.rounds import Entry, measure_in_rounds
from app.tune.strategies import (
    Budget,
    cache_split_plans,
    describe,
    first_n_in_ram,
    gpu_bytes,
    gpu_memory,
    llama_cpp_settings,
    one_layer_less,
    strategy_plans,
    with_experts_in_ram,
)

# the autotuned placement at llama.cpp's default settings: the prefill target's yardstick
AT_LLAMA_SETTINGS = "autotuned@llama.cpp"
# repeats: interleaved rounds (app.tune.rounds), each placement loaded once a round
REPORT_WORKLOAD = Workload(prefill_tokens=(512, 4096), decode_tokens=128, repeats=3)
CSV_COLUMNS = ("strategy", "placement", "gpu_gb", "prefill_512_tps", "prefill_4096_tps",
               "decode_tps", "decode_deep_tps", "decode_depth", "runs", "fits", "note",
               "ssd_gb_per_token", "ram_hit_rate", "vram_hit_rate", "predicted_hit_rate")


@dataclass
class CacheRows:
    """Hot experts in VRAM (engine patch 0004) in a bench: with a size (experts a layer, or
    bytes), one row with every layer's experts in RAM and a cache of that size; without, a row
    per split of the budget's VRAM for routed experts (app/advisor/cache_split.py). Each at
    n-cpu-moe's settings, so that only where the VRAM goes differs."""

    mode: ExpertCacheMode = "static"
    slots: int = 0
    bytes: int = 0
    uploads: int = 0  # dynamic: experts copied into VRAM per token, at most (0: the engine's default)

    def plans(self, model: GGUFModel, budget: Budget, base: PlacementPlan) -> dict[str, PlacementPlan]:
        # the cache copies experts from the file's layout: with a GPU llama.cpp keeps experts in
        # RAM so anyway; without one (the engine's test switch) only unrepacked weights are
        settings = replace(llama_cpp_settings(base, base), expert_cache=self.mode,
                           expert_cache_uploads=self.uploads, repack=False)
        if self.slots or self.bytes:
            plan = with_experts_in_ram(settings, model.n_layer, model.n_layer)
            return {f"cache {self.mode}": replace(plan, expert_cache_slots=self.slots,
                                                  expert_cache_bytes=self.bytes)}
        n = first_n_in_ram(model, budget, replace(settings, expert_cache="off"))
        around = with_experts_in_ram(settings, n, model.n_layer)
        return {f"cache {self.mode}, {name}": plan
                for name, plan in cache_split_plans(model, around, budget, self.mode)}


@dataclass
class BenchRow:
    # "classic", "experts-ram", "n-cpu-moe", "advisor", "autotuned", AT_LLAMA_SETTINGS, "sweep"
    strategy: str
    measurement: Measurement


def run_bench(measurer: Measurer, model: GGUFModel, budget: Budget, base: PlacementPlan, *,
              physical_cores: int, strategies: tuple[str, ...], tune_seconds: float = 240.0,
              sweep_step: int | None = None, hardware=None, workload: Workload = REPORT_WORKLOAD,
              say: Callable[[str], None] = print,
              on_rows: Callable[[list[BenchRow]], None] | None = None,
              cache_rows: CacheRows | None = None, hot_experts: bool = False,
              ) -> tuple[list[BenchRow], TuneResult | None]:
    """Autotune from the advisor's plan (``hot_experts``: the engine's hot-expert cache among
    its candidates); then measure each strategy at ``budget``, ``cache_rows``, the autotuned
    plan and, with ``sweep_step``, every "experts of the first N layers in RAM" for
    N = 0, step, 2*step... The rows are measured in ``workload.repeats`` interleaved rounds,
    each distinct placement once a round (``app.tune.rounds``); the sweep measures decode as
    ``workload`` does and prefill of its shortest prompt only. ``on_rows`` gets the rows so far
    after each run (a report cut short keeps them)."""
    plans = strategy_plans(model, budget, base, hardware)
    tuned: TuneResult | None = None
    if tune_seconds > 0:
        def show(p: TuneProgress) -> None:
            if p.last is not None:
                say(f"    -> {p.last.summary()}")
            if p.label != "done":
                say(f"  autotune [{p.done + 1}] {p.label}")

        say("autotune from the advisor's plan")
        tuned = autotune(measurer, model, plans["advisor"], budget, physical_cores=physical_cores,
                         time_limit=tune_seconds, progress=show,
                         workload=replace(TUNE_WORKLOAD, decode_depth=workload.decode_depth),
                         hot_experts=hot_experts)
        say(f"autotuned: {describe(tuned.best.plan, model.n_layer)} after {len(tuned.tried)} runs "
            f"in {tuned.seconds:.0f} s" + (f" ({tuned.stopped})" if tuned.stopped else ""))

    def step_down(plan: PlacementPlan) -> PlacementPlan | None:
        # the memory model can be a little short of llama.cpp's allocations
        return one_layer_less(plan, model.n_layer)

    entries = [Entry(name, plans[name], workload, step_down) for name in strategies]
    if cache_rows is not None:
        sized = bool(cache_rows.slots or cache_rows.bytes)  # the user's size: measured as given
        entries += [Entry(name, plan, workload, None if sized else fewer_slots)
                    for name, plan in cache_rows.plans(model, budget, base).items()]
    if tuned is not None:
        entries.append(Entry("autotuned", tuned.best.plan, workload))
        yardstick = llama_cpp_settings(tuned.best.plan, base)
        if yardstick != tuned.best.plan:  # for prefill: no decode deep in the context
            entries.append(Entry(AT_LLAMA_SETTINGS, yardstick, replace(workload, decode_depth=0)))
    if sweep_step:
        sweep_workload = replace(workload, prefill_tokens=workload.prefill_tokens[:1])
        for n in list(range(0, model.n_layer, sweep_step)) + [model.n_layer]:
            plan = with_experts_in_ram(plans["n-cpu-moe"], n, model.n_layer)
            entries.append(Entry(f"sweep {n}", plan, sweep_workload,
                                 fixed=far_over_budget(model, plan, budget, f"sweep {n}")))

    def rows_of(measured: list[Measurement | None]) -> list[BenchRow]:
        return [BenchRow("sweep" if e.label.startswith("sweep ") else e.label, m)
                for e, m in zip(entries, measured, strict=True) if m is not None]

    def detail(m: Measurement) -> str | None:
        return memory_line(model, m.plan, budget, m) if m.gpu_by_kind else None

    measured = measure_in_rounds(
        measurer, entries, max(1, workload.repeats), describe=lambda p: describe(p, model.n_layer),
        say=say, detail=detail, on_result=(lambda so_far: on_rows(rows_of(so_far))) if on_rows else None)
    return rows_of(list(measured)), tuned


def fewer_slots(plan: PlacementPlan) -> PlacementPlan | None:
    """A cache sized to the budget that turned out over it: about 5% fewer experts a layer
    (the memory model's error on the GPU), None when it holds one."""
    if plan.expert_cache_slots <= 1:
        return None
    return replace(plan, expert_cache_slots=plan.expert_cache_slots - max(1, plan.expert_cache_slots // 20))


# how far over the budget the memory model must put a plan for it to go unmeasured: beyond
# its error (within 5% of llama.cpp's allocations on the H100), so no plan that might fit is
# skipped; loading a 30 GB model only to see it over budget costs a sweep 10-20 s a point
CLEARLY_OVER = 1.10


def far_over_budget(model: GGUFModel, plan: PlacementPlan, budget: Budget, label: str) -> Measurement | None:
    """A "does not fit" measurement without loading, when the memory model puts ``plan``
    clearly over the budget; else None (measure it)."""
    predicted = gpu_bytes(model, plan, budget)
    if predicted <= CLEARLY_OVER * budget.usable:
        return None
    return Measurement(label, plan, gpu_bytes=predicted, fits=False,
                       error=f"the memory model puts {predicted / 1e9:.1f} GB on the GPU, far over "
                             f"the {budget.usable / 1e9:.1f} GB budget (not loaded)")


def memory_line(model: GGUFModel, plan: PlacementPlan, budget: Budget, m: Measurement) -> str:
    """What llama.cpp allocated on the GPU, by kind, beside what the memory model expected:
    the data that calibrates app/advisor/memory.py for a new model shape."""
    expected = gpu_memory(model, plan, budget)
    model_kinds = {"weights": sum(d.weights for d in expected), "kv_cache": sum(d.kv for d in expected),
                   "compute": sum(d.compute for d in expected)}
    parts = [f"{kind} {m.gpu_by_kind.get(kind, 0) / 1e9:.2f} (model {model_kinds.get(kind, 0) / 1e9:.2f})"
             for kind in dict.fromkeys([*model_kinds, *m.gpu_by_kind])]
    return f"GPU GB allocated: {', '.join(parts)}"


def _cells(row: BenchRow, n_layer: int) -> list[str]:
    m = row.measurement
    def tps(value: float | None) -> str:
        return f"{value:.1f}" if value else "-"
    return [row.strategy, describe(m.plan, n_layer), f"{m.gpu_bytes / 1e9:.1f}",
            tps(m.prefill_tps.get(512)), tps(m.prefill_tps.get(4096)), tps(m.decode_tps),
            tps(m.deep_decode_tps), str(m.decode_depth) if m.deep_decode_tps else "-",
            str(m.runs) if m.ok else "-", "yes" if m.fits else "no", m.error or m.note,
            f"{m.ssd_bytes_per_token / 1e9:.2f}" if m.ssd_bytes_per_token else "-",
            f"{m.ram_hit_rate:.0%}" if m.ram_hit_rate is not None else "-",
            f"{m.vram_hit_rate:.0%}" if m.vram_hit_rate is not None else "-",
            str(m.predicted_hit_rate) if m.predicted_hit_rate is not None else "-"]


def table_lines(rows: list[BenchRow], n_layer: int) -> list[str]:
    """The report as an aligned text table; decode deep in the context gets a column when it
    was measured (the depth is in its header, so not in a column of its own)."""
    depth = max((row.measurement.decode_depth for row in rows), default=0)
    # a model larger than RAM: what decoding read from the SSD, and the RAM cache's hits
    ssd = any(row.measurement.ssd_bytes_per_token for row in rows)
    # hot experts in VRAM: the share of selections they served, and the advisor's prediction
    hot = any(row.measurement.predicted_hit_rate or row.measurement.vram_hit_rate is not None for row in rows)
    header = ["strategy", "placement", "GPU GB", "pp512 t/s", "pp4096 t/s", "tg128 t/s",
              f"tg128@{depth} t/s", "depth", "runs", "fits", "note", "SSD GB/token", "RAM hits",
              "VRAM hits", "predicted"]
    keep = [i for i, name in enumerate(header) if name != "depth" and (depth or "@" not in name)
            and (ssd or name not in ("SSD GB/token", "RAM hits"))
            and (hot or name not in ("VRAM hits", "predicted"))]
    header = [header[i] for i in keep]
    body = [[cells[i] for i in keep] for cells in (_cells(row, n_layer) for row in rows)]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *body]]


def summary_lines(rows: list[BenchRow]) -> list[str]:
    """The issue's targets, read off the rows: each strategy (autotuned too) vs classic, the
    autotuned plan vs the sweep's best, and its prefill vs the same placement at llama.cpp's
    default settings (the same row when the autotuned settings are those)."""
    by = {row.strategy: row.measurement for row in rows if row.strategy != "sweep"}
    lines = []
    rounds = max((row.measurement.runs for row in rows), default=1)
    if rounds > 1:
        lines.append(f"each figure: the median of {rounds} rounds, each placement loaded once a "
                     "round, in another order each round")
    lines += _versus_classic({k: m for k, m in by.items() if k != AT_LLAMA_SETTINGS})
    lines += _cache_lines(by)
    tuned = by.get("autotuned")
    if tuned and tuned.ok:
        sweep = [row.measurement for row in rows if row.strategy == "sweep" and row.measurement.ok]
        if sweep:
            top = max(sweep, key=lambda m: m.decode)  # deep in the context when measured
            where = f" at depth {tuned.decode_depth}" if tuned.decode_depth else ""
            lines.append(f"autotuned decode{where} / best of the sweep ({top.label}): "
                         f"{100 * tuned.decode / top.decode:.1f}%{_spreads(tuned, top)}")
        default = by.get(AT_LLAMA_SETTINGS, tuned)
        if default.ok:
            for n in sorted(set(tuned.prefill_tps) & set(default.prefill_tps)):
                lines.append(f"autotuned prefill {n} / its placement at llama.cpp's settings: "
                             f"{tuned.prefill_tps[n] / default.prefill_tps[n]:.2f}x")
    return lines


def _cache_lines(by: dict[str, Measurement]) -> list[str]:
    """Each hot-expert row against llama.cpp's n-cpu-moe at the same budget, and its hits
    measured against predicted."""
    reference = by.get("n-cpu-moe")
    lines = []
    for name, m in by.items():
        if not m.ok or m.plan.expert_cache == "off":
            continue
        if reference is not None and reference.ok and reference.decode:
            ratio = f"decode {m.decode / reference.decode:.2f}x n-cpu-moe's"
        else:
            ratio = f"decode {m.decode:.1f} t/s"
        hits = (f"hot experts served {m.vram_hit_rate:.0%} of the RAM layers' selections"
                if m.vram_hit_rate is not None else m.note or "no hits counted")
        predicted = f" (predicted {m.predicted_hit_rate})" if m.predicted_hit_rate else ""
        lines.append(f"{name}: {ratio}; {hits}{predicted}")
    return lines


def _spreads(tuned: Measurement, top: Measurement) -> str:
    """Whether the rounds tell the two apart: their runs' ranges, and if these overlap."""
    a, b = tuned.decode_spread, top.decode_spread
    if a is None or b is None or tuned.plan == top.plan:
        return ""
    verdict = ("the ranges overlap: the rounds cannot tell them apart" if a[0] <= b[1] and b[0] <= a[1]
               else "the ranges do not overlap")
    return (f" (rounds: autotuned {a[0]:.1f}-{a[1]:.1f}, {top.label} {b[0]:.1f}-{b[1]:.1f} t/s; "
            f"{verdict})")


def _versus_classic(by: dict[str, Measurement]) -> list[str]:
    """Each strategy's decode over classic layer offload's, short and deep in the context."""
    classic = by.get("classic")
    if classic is None or not classic.ok:
        return []
    lines = []
    for what, speed in (("decode", lambda m: m.decode_tps),
                        (f"decode at depth {classic.decode_depth}", lambda m: m.deep_decode_tps)):
        if not speed(classic):
            continue
        ratios = [f"{name} {speed(m) / speed(classic):.2f}x" for name, m in by.items()
                  if name != "classic" and m.ok and speed(m)]
        if ratios:
            lines.append(f"{what} over classic layer offload: {', '.join(ratios)}")
    return lines


def write_csv(rows: list[BenchRow], n_layer: int, path: Path) -> None:
    """The rows as CSV, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(_cells(row, n_layer))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
