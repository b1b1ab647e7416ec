"""The rate each measured prefill copied experts at, against the probes: device_rates.py's copy refit.

For every run of tests/data/prefill_*.csv whose prefill copies routed experts from RAM to the
GPU (llama.cpp's op offload), the speed model's prefill time without the copies (copied at an
infinite rate) comes off the measured time; the copies' bytes over what remains is the rate
llama.cpp copied at. Its ratio to each figure the row carries says which figure predicts it
and by how much:

* ``copy_bw_1``: the RAM probe's one-thread numpy copy (the estimate without the copy probe);
* ``h2d_mapped`` (else ``h2d_pageable``) for runs with mmap, ``h2d_pinned`` without: the
  host-to-GPU copy probe's (app/hardware/h2d.py), where bench/jobs/h2d-probe-h200.sh added them.

The summary gives, per figure, the ratios' range and geometric mean: an efficiency range for
device_rates.py (PAGEABLE_EFFICIENCY against copy_bw_1; MAPPED_COPY_EFFICIENCY and
PINNED_COPY_EFFICIENCY against the copy probe) whose middle is near the geometric mean keeps
every run's prefill within 25% when the spread is within about 1.25x either side.

    python bench/copy_rate_fit.py
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.hardware.bandwidth import RamBandwidth  # noqa: E402
from app.hardware.h2d import HostCopyRates  # noqa: E402
from tests.test_speed_prefill import MACHINES, Headers, predicted, probes, run_id, runs  # noqa: E402

UNBOUNDED = math.inf  # bytes/s: copies that take no time


def without_copies(run: dict[str, str]) -> RamBandwidth:
    """The run's probes with copies at an infinite rate: the model's time for the rest."""
    ram = probes(run)
    free = HostCopyRates(gpu=MACHINES[run["machine"]].name, pageable=UNBOUNDED, pinned=UNBOUNDED,
                         mapped=UNBOUNDED, copy_bytes=0)
    return dataclasses.replace(ram, host_copy=free)


def figures(run: dict[str, str], mapped_file: bool) -> dict[str, float]:
    """The run's figures (bytes/s) a copy rate may be set from."""
    ram = probes(run)
    out = {"copy_bw_1": ram.copy_bw_1} if mapped_file else {}
    if ram.host_copy is not None:
        if mapped_file:
            out["h2d_mapped" if ram.host_copy.mapped else "h2d_pageable"] = ram.host_copy.from_file
        else:
            out["h2d_pinned"] = ram.host_copy.pinned
    return out


def main() -> int:
    ratios: dict[tuple[str, bool], list[float]] = {}
    print("| run | copied GB | rest ms (model) | measured ms | copy GB/s | ratio to each figure |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        headers = Headers(Path(folder))
        for run in runs():
            if run["placement"] == "gpu":
                continue
            with_copies = predicted(headers, run)
            copied = with_copies.prefill_copy_bytes
            if not copied:
                continue  # the one MoE layer is the last: run for the output token, never copied
            n_prompt = int(run["n_prompt"])
            rest = n_prompt / predicted(headers, run, without_copies(run)).prefill.mid
            measured = n_prompt / float(run["prefill_tps"])
            mapped_file = run.get("use_mmap", "1") == "1"
            if measured <= rest:
                print(f"| {run_id(run)} | {copied / 1e9:.1f} | {rest * 1e3:.0f} | {measured * 1e3:.0f} "
                      "| - | the model's compute alone is slower than the run |")
                continue
            rate = copied / (measured - rest)
            cells = []
            for name, value in figures(run, mapped_file).items():
                ratios.setdefault((name, mapped_file), []).append(rate / value)
                cells.append(f"{name} {value / 1e9:.1f}: {rate / value:.2f}x")
            print(f"| {run_id(run)} | {copied / 1e9:.1f} | {rest * 1e3:.0f} | {measured * 1e3:.0f} "
                  f"| {rate / 1e9:.1f} | {'; '.join(cells)} |")
    print()
    for (name, mapped_file), values in sorted(ratios.items()):
        mean = math.exp(sum(map(math.log, values)) / len(values))
        source = "mapped file" if mapped_file else "pinned memory"
        print(f"{name} ({source}, {len(values)} runs): {min(values):.2f}-{max(values):.2f}x, "
              f"geometric mean {mean:.2f}x, spread {max(values) / min(values):.2f}x")
    if not any(name.startswith("h2d_") for name, _ in ratios):
        print("(no run carries the copy probe's figures yet: bench/jobs/h2d-probe-h200.sh measures them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
