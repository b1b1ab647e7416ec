"""The memory model's compute buffers against llama.cpp's on the CUDA stand-in, at real sizes.

Every family's preset at its full layer count, vocabulary and expert count (a sparse header:
llama.cpp's no_alloc load reads nothing else), over placements, contexts, ubatches, flash
attention and KV cache types: ``memory_by_device``'s GPU and pinned-host compute buffers against
the stand-in's (bench/cuda_sim/load.py). ``--csv`` writes the stand-in's figures for
tests/test_cuda_compute.py.

    python bench/cuda_sim/check.py --csv tests/data/cuda_compute_stand_in.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.advisor.memory import memory_by_device  # noqa: E402
from app.engine.placement import PlacementPlan  # noqa: E402
from app.gguf.info import read_model  # noqa: E402
from app.synthetic import SyntheticSpec  # noqa: E402
from app.synthetic.writer import write_synthetic_header  # noqa: E402
from bench.cuda_sim.load import stand_in_load  # noqa: E402

PRESETS = ("qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x7b", "deepseek-v3", "kimi-k2", "glm-4.5",
           "glm-4.5-air", "gpt-oss-120b", "gpt-oss-20b")


def plans(spec: SyntheticSpec) -> list[dict[str, object]]:
    """Placements x context x ubatch, and a few with flash attention off, a q8_0 cache, four
    parallel sequences."""
    half = spec.n_layer // 2
    placements = [{"experts_in_ram": "none"}, {"experts_in_ram": "all"}, {"experts_in_ram": half},
                  {"n_gpu_layers": half}]
    out = []
    for place in placements:
        for n_ctx, n_ubatch in ((4096, 512), (32768, 512), (8192, 2048)):
            out.append({**place, "n_ctx": n_ctx, "n_ubatch": n_ubatch})
    out += [{"n_ctx": 16384, "flash_attn": "off"}, {"n_ctx": 65536, "type_k": "q8_0", "type_v": "q8_0"},
            {"n_ctx": 8192, "n_parallel": 4, "experts_in_ram": "all"}]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", action="append", choices=PRESETS, help="default: all")
    parser.add_argument("--csv", type=Path, help="write the stand-in's buffers here")
    args = parser.parse_args(argv)
    rows, worst = [], 0.0
    print("| preset | plan | CUDA0 llama.cpp MiB | model MiB | error "
          "| host llama.cpp MiB | model MiB | error |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.preset or PRESETS:
            spec = SyntheticSpec.preset(preset)
            path = write_synthetic_header(Path(folder) / f"{preset}.gguf", spec)
            model = read_model(path)
            for fields in plans(spec):
                real = stand_in_load(path, fields).buffers
                plan = dataclasses.replace(PlacementPlan(split_mode="none", use_mmap=False), **fields)
                cpu, gpu = memory_by_device(model, plan, ["CUDA0"])[:2]
                cells = []
                for measured, modelled in ((real["CUDA0"], gpu.compute), (real["CUDA_Host"], cpu.compute)):
                    error = (modelled - measured) / measured
                    worst = max(worst, abs(error))
                    cells += [f"{measured / 2**20:.1f}", f"{modelled / 2**20:.1f}", f"{error:+.1%}"]
                print(f"| {preset} | {json.dumps(fields)} | " + " | ".join(cells) + " |", flush=True)
                rows.append({"preset": preset, "plan": json.dumps(fields), "gpu": real["CUDA0"],
                             "host": real["CUDA_Host"]})
    print(f"largest error: {worst:.1%}")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["preset", "plan", "gpu", "host"])
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
