"""Labelled placements measured in rounds: each distinct placement once a round, in another
order each round, and each label's figures the medians over its rounds.

Drift on the machine (clocks, other tenants' memory traffic, the page cache) then hits every
placement alike instead of whichever ran first, and labels that share a placement (n-cpu-moe,
the advisor and the autotuned plan often do) share one set of runs instead of scattering apart:
on the H100 one placement of the 235B shape, measured as three rows one after another, decoded
at 20.2, 14.5 and 34.6 t/s at depth 8192.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from app.engine.placement import PlacementPlan
from app.tune.measure import Measurement, Workload


class Measures(Protocol):
    def measure(self, label: str, plan: PlacementPlan, workload: Workload) -> Measurement: ...


@dataclass
class Entry:
    """One row to measure: its label, placement and what to run on it."""

    label: str
    plan: PlacementPlan
    workload: Workload
    # first round only: the placement to try instead when this one is over the budget
    step_down: Callable[[PlacementPlan], PlacementPlan | None] | None = None
    fixed: Measurement | None = None  # known without a run (e.g. far over the budget)


def plan_key(plan: PlacementPlan) -> str:
    return repr(plan)


def merged_workload(workloads: list[Workload]) -> Workload:
    """One run that answers every workload: all their prompts, the longest decode and depth."""
    return Workload(prefill_tokens=tuple(sorted({n for w in workloads for n in w.prefill_tokens})),
                    decode_tokens=max(w.decode_tokens for w in workloads), repeats=1,
                    decode_depth=max(w.decode_depth for w in workloads))


def median_measurement(runs: list[Measurement], label: str) -> Measurement:
    """A placement's runs as one measurement: the median of each figure over the runs that
    succeeded (all of them but a failed first one, which stands alone)."""
    ok = [m for m in runs if m.ok] or runs[:1]
    first = ok[0]

    def mid(values: list[float]) -> float:
        values = [v for v in values if v]
        return statistics.median(values) if values else 0.0

    def span(values: list[float]) -> tuple[float, float] | None:
        values = [v for v in values if v]
        return (min(values), max(values)) if len(values) > 1 else None

    prompts = sorted({n for m in ok for n in m.prefill_tps})
    decode, deep = [m.decode_tps for m in ok], [m.deep_decode_tps for m in ok]
    return replace(first, label=label,
                   prefill_tps={n: mid([m.prefill_tps.get(n, 0.0) for m in ok]) for n in prompts},
                   decode_tps=mid(decode), deep_decode_tps=mid(deep),
                   decode_range=span(decode), deep_decode_range=span(deep),
                   gpu_bytes=max(m.gpu_bytes for m in ok), runs=len(ok))


def measure_in_rounds(measurer: Measures, entries: list[Entry], rounds: int, *,
                      describe: Callable[[PlacementPlan], str],
                      say: Callable[[str], None] = print,
                      detail: Callable[[Measurement], str | None] = lambda _m: None,
                      on_result: Callable[[list[Measurement | None]], None] | None = None,
                      ) -> list[Measurement]:
    """Measure ``entries`` in ``rounds`` rounds; returns one measurement per entry, in order.

    The first round goes in the entries' order and settles each placement: one over the
    budget steps down (``Entry.step_down``) until one fits. Later rounds measure each distinct
    placement that could be measured once more, starting one further along each round.
    ``on_result`` gets the measurements so far (None: not yet) after each run; ``detail`` may
    add a line about a run (what it allocated)."""
    plans = [entry.plan for entry in entries]
    runs: dict[str, list[Measurement]] = {}
    results: list[Measurement | None] = [None] * len(entries)

    def workload_of(key: str) -> Workload:
        return merged_workload([e.workload for e, p in zip(entries, plans, strict=True)
                                if e.fixed is None and plan_key(p) == key])

    def run(label: str, plan: PlacementPlan) -> Measurement:
        measured = measurer.measure(label, plan, workload_of(plan_key(plan)))
        if (line := detail(measured)) is not None:
            say("  " + line)
        return measured

    def publish() -> None:
        for i, entry in enumerate(entries):
            if entry.fixed is None and plan_key(plans[i]) in runs and results[i] is not None:
                results[i] = median_measurement(runs[plan_key(plans[i])], entry.label)
        if on_result:
            on_result(results)

    for i, entry in enumerate(entries):  # round 1
        if entry.fixed is not None:
            say(f"{entry.label}: {entry.fixed.error or 'not measured'}")
            results[i] = entry.fixed
            publish()
            continue
        while True:
            key = plan_key(plans[i])
            if key in runs:
                twin = next(e.label for e, p in zip(entries, plans, strict=True)
                            if plan_key(p) == key and e is not entry)
                say(f"{entry.label}: {describe(plans[i])}, the placement of {twin} (measured once)")
                break
            say(f"{entry.label}: {describe(plans[i])}")
            measured = run(entry.label, plans[i])
            runs[key] = [measured]
            lower = None if measured.fits or entry.step_down is None else entry.step_down(plans[i])
            if lower is None:
                break
            say(f"  {measured.error}: one layer less")
            del runs[key]
            plans[i] = lower
        results[i] = median_measurement(runs[key], entry.label)
        publish()

    # placements measured well in round 1, each once, under the label of its first entry
    again: dict[str, tuple[str, PlacementPlan]] = {}
    for entry, plan in zip(entries, plans, strict=True):
        if entry.fixed is None and runs[plan_key(plan)][0].ok:
            again.setdefault(plan_key(plan), (entry.label, plan))
    order = list(again)
    for r in range(1, rounds):
        shift = r % len(order) if order else 0
        for key in order[shift:] + order[:shift]:
            label, plan = again[key]
            say(f"round {r + 1}/{rounds}: {label}: {describe(plan)}")
            runs[key].append(run(label, plan))
            publish()
    return [m for m in results if m is not None]
