"""llama.cpp's CPU kernels on routed experts of each quant type, against Q4_0's: the figures of
the speed model's CPU_KERNEL_RATE (app/advisor/device_rates.py).

The kernel probe (app/tune/expert_read_probe.py: a 2- and a 6-layer model with Qwen3-30B-A3B's
shapes, decoded with 2 and with 8 experts a token, the experts in the file's layout) is run
with the routed experts written in each type (app/synthetic: random blocks of the type), in
interleaved passes; each type's rate is divided by the same pass's Q4_0 rate (measured first
and last in the pass), and the medians over the passes are printed. A busy machine scatters a
pass by 10-20%: run it on an otherwise idle one, with several passes.

    python bench/kernel_rate_by_type.py --threads 2 --passes 5
"""

from __future__ import annotations

import argparse
import statistics

from app.engine.client import EngineClient
from app.tune.expert_read_probe import (
    PROBE_TYPES,
    REFERENCE_TYPE,
    engine_has_gpu,
    measure_expert_read,
    probe_spec,
)


def rate(client: EngineClient, quant: str, threads: int, has_gpu: bool) -> float:
    return measure_expert_read(client, threads=threads, spec=probe_spec(quant), has_gpu=has_gpu).bytes_per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="0: the engine's default")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--types", nargs="*", default=PROBE_TYPES,
                        help="expert types (default: every one the probe can write)")
    args = parser.parse_args(argv)
    types = [q for q in args.types if q != REFERENCE_TYPE]
    unknown = [q for q in types if q not in PROBE_TYPES]
    if unknown:
        parser.error(f"not an expert type of the synthetic writer: {', '.join(unknown)}")
    ratios: dict[str, list[float]] = {q: [] for q in types}
    with EngineClient.spawn() as client:
        has_gpu = engine_has_gpu(client)
        for n in range(args.passes):
            first = rate(client, REFERENCE_TYPE, args.threads, has_gpu)
            rates = {q: rate(client, q, args.threads, has_gpu) for q in types}
            last = rate(client, REFERENCE_TYPE, args.threads, has_gpu)
            reference = (first + last) / 2
            for q in types:
                ratios[q].append(rates[q] / reference)
            print(f"pass {n + 1}: {REFERENCE_TYPE} {first / 1e9:.2f} / {last / 1e9:.2f} GB/s; "
                  + " ".join(f"{q} {ratios[q][-1]:.2f}" for q in types), flush=True)
    print(f"\n| type | rate against {REFERENCE_TYPE} (median) | passes' range |\n|---|---|---|")
    for q in types:
        print(f"| {q} | {statistics.median(ratios[q]):.2f} | {min(ratios[q]):.2f}-{max(ratios[q]):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
