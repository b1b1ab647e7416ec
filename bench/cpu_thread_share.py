"""The CPU thread share each measured decode implies: device_rates.py's CPU_THREAD_EFFICIENCY refit.

For every run of tests/data/prefill_*.csv with experts in RAM, the share of the RAM probe's
one-thread read rate a CPU thread must reach for the speed model's decode to equal the
measurement (both ends of the range set to it, solved by bisection); "all-core bound" where
the model's other CPU bound (the all-core read rate) decides the decode at any share. A share
that keeps each run's middle within 25% exists only where the largest is under 1.56x the
smallest.

    python bench/cpu_thread_share.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.advisor.device_rates as device_rates  # noqa: E402
from tests.test_speed_prefill import Headers, predicted, run_id, runs  # noqa: E402


def implied_share(header: Headers, run: dict[str, str]) -> float | None:
    """The thread share at which the run's predicted decode is its measured one."""
    measured = float(run["decode_tps"])

    def decode_at(share: float) -> float:
        device_rates.CPU_THREAD_EFFICIENCY = (share, share)
        return predicted(header, run).decode.mid

    low, high = 0.05, 3.0
    if decode_at(high) < measured:
        return None
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if decode_at(middle) < measured else (low, middle)
    return (low + high) / 2


def main() -> int:
    fitted = device_rates.CPU_THREAD_EFFICIENCY
    header = Headers(Path(tempfile.mkdtemp()))
    shares = []
    print("| run | one-thread read GB/s | measured t/s | implied share |")
    print("|---|---|---|---|")
    for run in runs():
        if not run["decode_tps"] or run["placement"] == "gpu":
            continue
        share = implied_share(header, run)
        print(f"| {run_id(run)} | {run['read_bw_1']} | {run['decode_tps']} | "
              f"{'all-core bound' if share is None else f'{share:.3f}'} |")
        if share is not None:
            shares.append(share)
    device_rates.CPU_THREAD_EFFICIENCY = fitted
    print(f"\n{len(shares)} runs bound by the thread rate: shares {min(shares):.3f}-{max(shares):.3f} "
          f"(spread {max(shares) / min(shares):.2f}x); fitted now {fitted[0]}-{fitted[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
