"""The scheduler's time a decoded graph per placement and round, from a bench/expert_cache.py
output run with --profile (LLAMA_SCHED_PROFILE=1): one markdown row each, the mean of its
windows of 64 graphs after the first (the first holds the prompt's graphs and the cache's first
copies). Where a decoded token's time went, and what an A/B changed: CPU compute, the CPU
splits' input copies and waits, the device splits' input copies (the CPU's results, waited for
by the host) and launches; with a cache, its copies started a step.

    python3 bench/sched_profile.py ec-q30-realistic.txt [more files]
"""

from __future__ import annotations

import argparse
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

SCHED = re.compile(r"sched profile \(us per graph, \d+ graphs\): total (\d+) \| cpu splits [\d.]+ copy (\d+) "
                   r"compute (\d+) \| device splits [\d.]+ copy (\d+) launch (\d+)")
CACHE = re.compile(r"moe cache profile \(per step, \d+ steps\): copies started ([\d.]+)")


@dataclass
class Placement:
    """One placement's run (a budget, a round) and its profile windows, in microseconds."""

    budget: str
    name: str
    windows: list[tuple[int, ...]] = field(default_factory=list)
    copies: list[float] = field(default_factory=list)

    def row(self) -> str:
        kept = self.windows[1:]
        mean = [statistics.fmean(w[i] for w in kept) for i in range(5)]
        copies = f"{statistics.fmean(self.copies[1:]):.1f}" if len(self.copies) > 1 else "-"
        times = " | ".join(f"{mean[i]:.0f}" for i in (0, 2, 1, 3, 4))
        return f"| {self.budget} | {self.name} | {len(kept)} | {times} | {copies} |"


def placements(text: str) -> list[Placement]:
    """The placements of one output, in order, with their windows."""
    found: list[Placement] = []
    budget = "-"
    current: Placement | None = None
    for line in text.splitlines():
        if line.startswith("=== budget"):
            budget = line.split()[2]
            current = None
        elif line.startswith("--- "):
            current = Placement(budget, line[4:].strip())
            found.append(current)
        elif current is not None and (m := SCHED.search(line)):
            current.windows.append(tuple(int(g) for g in m.groups()))
        elif current is not None and (m := CACHE.search(line)):
            current.copies.append(float(m.group(1)))
    return [p for p in found if len(p.windows) > 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+", type=Path)
    args = parser.parse_args()
    for path in args.outputs:
        rows = placements(path.read_text(errors="replace"))
        print(f"{path.name}: the scheduler's time a decoded graph (us, mean of the windows after the first)")
        if not rows:
            print("(no placement with two windows of 64 graphs: run with --profile and more tokens)")
            continue
        print("| budget | placement | windows | total | CPU compute | CPU input copies | device input copies "
              "| device launches | cache copies a step |")
        print("|---|---|---|---|---|---|---|---|---|")
        for p in rows:
            print(p.row())


if __name__ == "__main__":
    main()
