"""The host-to-GPU copy probe (app/hardware/h2d.py), run as the app runs it and around that.

Prints, with a CUDA GPU:
* the RAM probe's one-thread numpy copy (``copy_bw_1``: the speed model's estimate without
  the copy probe);
* the copy probe as the app runs it (its defaults, in its child process), ``--runs`` times:
  its run-to-run spread, and how long it takes (the app's budget: about a second);
* a sweep of copy sizes (``--sizes``, MiB): whether 256 MiB is past the size where the rate
  settles, for llama.cpp copies a layer's used experts tensor by tensor (tens of MB to GBs);
* the figures as tests/data/prefill_*.csv's ``h2d_pageable,h2d_mapped,h2d_pinned`` columns
  (GB/s, medians of the runs).

``--scratch`` puts the mapped file on the drive of the models (the job's models are in /tmp).

    python bench/h2d_probe.py --runs 3 --sizes 16,64,256,1024 --scratch /tmp --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.hardware.bandwidth import measure_ram  # noqa: E402
from app.hardware.h2d import DEFAULT_COPY_BYTES, HostCopyProbe, measure_host_copies  # noqa: E402

MiB = 1 << 20


def gb(rate: float | None) -> str:
    return f"{rate / 1e9:.2f}" if rate else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="the app's probe, this many times")
    parser.add_argument("--sizes", default="", help="comma-separated copy sizes in MiB to sweep")
    parser.add_argument("--repeats", type=int, default=5, help="timed copies per size in the sweep")
    parser.add_argument("--scratch", type=Path, help="folder of the mapped file (default: the app's)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    record: dict[str, object] = {}

    ram = measure_ram()
    print(f"RAM probe: one-thread numpy copy {gb(ram.copy_bw_1)} GB/s, read {gb(ram.read_bw)} GB/s "
          f"({ram.threads} threads), one thread {gb(ram.read_bw_1)} GB/s", flush=True)
    record["ram"] = asdict(ram)

    runs: list[HostCopyProbe] = []
    print("| probe | seconds | pinned GB/s | pageable GB/s | mapped file GB/s | copy MiB |")
    print("|---|---|---|---|---|---|")
    for i in range(args.runs):
        start = time.perf_counter()
        probe = measure_host_copies(scratch_dir=args.scratch)
        seconds = time.perf_counter() - start
        runs.append(probe)
        r = probe.rates
        if r is None:
            print(f"| app's, run {i + 1} | {seconds:.2f} | {probe.describe()} | | | |", flush=True)
            continue
        print(f"| app's, run {i + 1} | {seconds:.2f} | {gb(r.pinned)} | {gb(r.pageable)} | {gb(r.mapped)} "
              f"| {r.copy_bytes // MiB} |", flush=True)
    record["runs"] = [{"state": p.state.value, "detail": p.detail,
                       "rates": asdict(p.rates) if p.rates else None} for p in runs]

    sweep = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        start = time.perf_counter()
        probe = measure_host_copies(copy_bytes=size * MiB, repeats=args.repeats, scratch_dir=args.scratch)
        seconds = time.perf_counter() - start
        r = probe.rates
        cells = f"{gb(r.pinned)} | {gb(r.pageable)} | {gb(r.mapped)}" if r else probe.describe() + " | |"
        print(f"| {size} MiB, {args.repeats} copies | {seconds:.2f} | {cells} | {size} |", flush=True)
        sweep.append({"copy_mib": size, "rates": asdict(r) if r else None, "detail": probe.detail})
    record["sweep"] = sweep

    measured = [p.rates for p in runs if p.rates is not None]
    if measured:
        print(f"device: {measured[0].gpu}; runtime: {measured[0].runtime}; default copy "
              f"{DEFAULT_COPY_BYTES // MiB} MiB")
        columns = [statistics.median(getattr(r, name) or 0.0 for r in measured)
                   for name in ("pageable", "mapped", "pinned")]
        print("csv columns h2d_pageable,h2d_mapped,h2d_pinned: "
              + ",".join(f"{c / 1e9:.2f}" for c in columns))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
