"""Report rows measured in interleaved rounds: each distinct placement once a round, in another
order each round, medians per row, and a placement over the budget stepped down in round one.
A stand-in measurer answers (the real one runs in tests/test_tune.py); it records the order."""

from __future__ import annotations

from dataclasses import replace

from app.engine.placement import PlacementPlan
from app.tune.measure import Measurement, Workload
from app.tune.rounds import Entry, measure_in_rounds, merged_workload

SHORT = Workload(prefill_tokens=(512,), decode_tokens=64)
FULL = Workload(prefill_tokens=(512, 4096), decode_tokens=128, decode_depth=8192)


class Drifting:
    """Decode grows by 10 t/s with every run (the machine warming up, say); a plan with fewer
    than ``min_in_ram`` layers' experts in RAM is over the budget."""

    def __init__(self, min_in_ram: int = 0) -> None:
        self.calls: list[tuple[str, PlacementPlan, Workload]] = []
        self.min_in_ram = min_in_ram

    def measure(self, label: str, plan: PlacementPlan, workload: Workload) -> Measurement:
        self.calls.append((label, plan, workload))
        n = plan.experts_in_ram if isinstance(plan.experts_in_ram, int) else 48
        if n < self.min_in_ram:
            return Measurement(label, plan, fits=False, error="over budget")
        speed = 10.0 * len(self.calls)
        return Measurement(label, plan, decode_tps=speed,
                           prefill_tps={p: 100 * speed for p in workload.prefill_tokens},
                           deep_decode_tps=speed / 2 if workload.decode_depth else 0.0,
                           decode_depth=workload.decode_depth)


def plan(n: int) -> PlacementPlan:
    return PlacementPlan(experts_in_ram=n)


def run(measurer: Drifting, entries: list[Entry], rounds: int) -> list[Measurement]:
    return measure_in_rounds(measurer, entries, rounds, describe=repr, say=lambda _line: None)


def test_rows_sharing_a_placement_share_its_runs_and_each_round_starts_further_along() -> None:
    measurer = Drifting()
    entries = [Entry("classic", PlacementPlan(n_gpu_layers=20), FULL), Entry("advisor", plan(29), FULL),
               Entry("autotuned", plan(29), FULL), Entry("sweep 36", plan(36), SHORT)]
    results = run(measurer, entries, 3)
    order = [label for label, _plan, _w in measurer.calls]
    assert order == ["classic", "advisor", "sweep 36",      # round 1: the entries' order
                     "advisor", "sweep 36", "classic",      # round 2: one further along
                     "sweep 36", "classic", "advisor"]      # round 3
    # the medians of each placement's three runs: classic ran 1st, 6th and 8th (10, 60, 80),
    # advisor 2nd, 4th and 9th (20, 40, 90), the sweep's 3rd, 5th and 7th (30, 50, 70)
    assert [m.decode_tps for m in results] == [60.0, 40.0, 40.0, 50.0]
    assert results[1].label == "advisor" and results[2].label == "autotuned"
    assert all(m.runs == 3 for m in results)
    # one run answers every row of a placement: the sweep's plan alone runs the short workload
    workloads = {label: w for label, _p, w in measurer.calls}
    assert workloads["advisor"] == merged_workload([FULL, FULL])
    assert workloads["sweep 36"] == replace(SHORT, repeats=1)
    assert results[1].deep_decode_tps == 20.0 and results[3].deep_decode_tps == 0.0
    # and the spread of those runs, for telling rows apart (the ranked figure: deep if measured)
    assert results[0].decode_range == (10.0, 80.0) and results[0].deep_decode_range == (5.0, 40.0)
    assert results[1].decode_spread == (10.0, 45.0) and results[3].decode_spread == (30.0, 70.0)


def test_a_placement_over_the_budget_steps_down_in_round_one_and_only_the_fitting_one_repeats() -> None:
    measurer = Drifting(min_in_ram=30)
    down = lambda p: plan(p.experts_in_ram + 1) if p.experts_in_ram < 48 else None  # noqa: E731
    entries = [Entry("n-cpu-moe", plan(29), SHORT, step_down=down),
               Entry("far", plan(0), SHORT, fixed=Measurement("far", plan(0), fits=False,
                                                              error="far over the budget (not loaded)")),
               Entry("sweep 20", plan(20), SHORT)]
    results = run(measurer, entries, 2)
    assert [(label, p.experts_in_ram) for label, p, _w in measurer.calls] == [
        ("n-cpu-moe", 29), ("n-cpu-moe", 30), ("sweep 20", 20), ("n-cpu-moe", 30)]
    stepped, far, over = results
    assert stepped.ok and stepped.plan.experts_in_ram == 30 and stepped.runs == 2
    assert stepped.decode_tps == 30.0  # median of runs 2 and 4
    assert not far.ok and "not loaded" in (far.error or "")  # never measured
    assert not over.ok and over.runs == 1  # over the budget with no step down: measured once


def test_rows_so_far_are_handed_on_after_every_run() -> None:
    seen: list[list[float | None]] = []
    measure_in_rounds(Drifting(), [Entry("a", plan(1), SHORT), Entry("b", plan(2), SHORT)], 2,
                      describe=repr, say=lambda _line: None,
                      on_result=lambda so_far: seen.append([m.decode_tps if m else None for m in so_far]))
    # round 2 starts with b: runs 3 (b) and 4 (a)
    assert seen == [[10.0, None], [10.0, 20.0], [10.0, 25.0], [25.0, 25.0]]
