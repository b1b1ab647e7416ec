"""Does the kernel probe's rate depend on how many layers its model has? (issue 19)

The probe (app/tune/expert_read_probe.py) decoded a two-layer model with 2 and with 8 experts a
token and kept an expert's bytes over its share of the time difference. On the thirty-third
session's H100 host it read 64.0 GB/s (16 threads, nothing pending on the disk) while the same
host's n-cpu-moe decodes of the 48-layer 30B shape computed 36 layers' experts (764 MB a token)
in 8.1-9.0 ms of CPU time, 85-94 GB/s with each layer's fixed cost in it, and the advisor's
predictions from the probe read 19-29% low. This runs the probe's own measurement on models of
several layer counts (each model's slope alone, as the probe measured until then), in one
engine, interleaved ``--passes`` times: the same rate at every count says the slope is the
kernels'; a rate that grows with the layers says a token's costs that grow with the experts
chosen but not with the layers weigh in a small model's slope. The dev machine's (2 threads):
6.1 / 7.3 / 8.1 GB/s at 2 / 4 / 8 layers, 9.1 between them; so the probe now takes the
difference between two models' slopes (app/tune/expert_read_probe.py).

    python bench/probe_layers.py --threads 16 --layers 2 8 16 --passes 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.engine.client import EngineClient  # noqa: E402
from app.tune.expert_read_probe import engine_has_gpu, measure_expert_read  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="0: the engine's default")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="the probe's rounds a measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where the models go (default: temp)")
    args = parser.parse_args(argv)
    rates: dict[int, list[float]] = {n: [] for n in args.layers}
    with tempfile.TemporaryDirectory(prefix="moedesk-probe-layers-", dir=args.dir) as tmp, \
            EngineClient.spawn() as client:
        has_gpu = engine_has_gpu(client)
        for n in range(args.passes):
            line = []
            for layers in args.layers:
                rate = measure_expert_read(client, threads=args.threads or None, layers=(layers,),
                                           folder=Path(tmp), rounds=args.rounds, has_gpu=has_gpu)
                rates[layers].append(rate.bytes_per_s / 1e9)
                line.append(f"{layers} layers {rate.bytes_per_s / 1e9:.1f}")
            print(f"pass {n + 1}: " + "; ".join(line) + " GB/s", flush=True)
    print("| layers | kernel rate GB/s (median) | passes' range |")
    print("|---|---|---|")
    for layers, values in rates.items():
        print(f"| {layers} | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
