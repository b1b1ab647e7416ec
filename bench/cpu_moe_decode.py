"""How fast llama.cpp's CPU kernels decode routed experts in the file's layout (what a GPU
machine runs for the layers whose experts are in RAM): a token's time a MoE layer, split into a
fixed part and a part per chosen expert.

Decodes synthetic models with Qwen3-30B-A3B's layer shapes (uniform routing, a small
vocabulary so the output head counts little) at three layer counts and three numbers of chosen
experts (the model's ``expert_used_count`` overridden at load), the routed experts on the CPU
and not repacked, the rest of each layer on the GPU where there is one (llama.cpp's --cpu-moe);
a least-squares fit of the nine times, t = c + L * (fixed + k * expert), gives the time a layer
(fixed: on a CPU only, with the layer's attention) and an expert (its bytes over that time: the
kernels' read rate), with the fit's largest residual (the eighteenth session's H100 run of a
four-point version gave 171 GB/s an expert, twice the host's RAM: four timings do not separate
the two parts). Each setting of patch 0007's fused
up/gate pass (on, and off with GGML_CPU_DISABLE_FUSION=1) runs in processes of its own: the CPU
backend reads it at start.

The sixteenth session's H100 profiles fit 72 us a layer + 45 us an expert with a GPU beside;
this measures the CPU's share of that, on any machine, in about a minute:
    python bench/cpu_moe_decode.py --threads 16
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LAYERS = (2, 4, 8)
EXPERTS = (2, 4, 8)


def has_gpu() -> bool:
    """With a GPU, llama.cpp's --cpu-moe (the case this measures); else everything on the CPU."""
    from app.engine import ggml_backend

    return any(name != "CPU" for name in ggml_backend.backends())


def worker(model: str, k: int, threads: int, tokens: int) -> float:
    """Seconds a decoded token takes (the median of ``tokens``), in this process."""
    import llama_cpp

    from app.engine.llama_params import context_params, model_params
    from app.gguf.info import read_model
    from app.tune.expert_read_probe import probe_plan

    info = read_model(Path(model))
    # the kernel probe's placement (the app's two-point version of this fit)
    plan = replace(probe_plan(k, threads, has_gpu()), n_ctx=256)
    llama_cpp.llama_backend_init()
    progress = llama_cpp.llama_progress_callback(lambda *_: True)
    mp = model_params(plan, info.n_layer, info.architecture, progress)
    lm = llama_cpp.llama_model_load_from_file(model.encode(), mp.params)
    ctx = llama_cpp.llama_init_from_model(lm, context_params(plan))
    batch = llama_cpp.llama_batch_init(1, 0, 1)
    times = []
    for pos in range(tokens + 4):
        batch.n_tokens, batch.token[0], batch.pos[0] = 1, 1 + (pos * 37) % 400, pos
        batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = 1, 0, True
        t0 = time.perf_counter()
        assert llama_cpp.llama_decode(ctx, batch) == 0
        times.append(time.perf_counter() - t0)
    times = sorted(times[4:])  # the first tokens touch the mapped pages
    return times[len(times) // 2]


def measure(model: Path, k: int, threads: int, tokens: int, fused: bool) -> float:
    env = {**os.environ, "GGML_CPU_DISABLE_FUSION": "0" if fused else "1"}
    command = [sys.executable, __file__, "--worker", str(model), str(k), str(threads), str(tokens)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: physical cores)")
    parser.add_argument("--tokens", type=int, default=48, help="timed a run (the median kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the models (default: temp)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, k, threads, tokens = args.worker
        print(worker(model, int(k), int(threads), int(tokens)))
        return

    from app.engine.llama_params import default_threads
    from app.gguf.info import read_model
    from app.synthetic import SyntheticSpec, write_synthetic_model

    threads = args.threads or default_threads()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        models = {}
        for n_layer in LAYERS:
            spec = SyntheticSpec.preset("qwen3-30b-a3b", n_layer=n_layer, n_vocab=512, routing="uniform")
            (models[n_layer],) = write_synthetic_model(Path(tmp) / f"q30-{n_layer}l.gguf", spec)
        info = read_model(models[LAYERS[0]])
        expert = info.expert_bytes()
        where = ("the rest of each layer on the GPU" if has_gpu()
                 else "CPU only: the layer's attention weights read too")
        print(f"Qwen3-30B-A3B layer shapes, {expert / 2**20:.2f} MiB an expert, {threads} threads, "
              f"routed experts in RAM in the file's layout (not repacked), {where}")
        columns = " | ".join(f"L={n} k={k}" for k in EXPERTS for n in LAYERS)
        print(f"| up/gate pass | t/token (ms) {columns} | a layer, fixed (us) | an expert (us) | "
              "expert read rate GB/s | largest residual (ms) |")
        print("|---|---|" + "---|" * (len(LAYERS) * len(EXPERTS) - 1) + "---|---|---|---|")
        for fused in (True, False):
            t = {(n, k): measure(models[n], k, threads, args.tokens, fused) for n in LAYERS for k in EXPERTS}
            c, fixed, per_expert, residual = fit(t)
            times = " | ".join(f"{t[(n, k)] * 1e3:.2f}" for k in EXPERTS for n in LAYERS)
            print(f"| {'fused (patch 0007)' if fused else 'three ops'} | {times} | {fixed * 1e6:.0f} | "
                  f"{per_expert * 1e6:.1f} | {expert / per_expert / 1e9:.1f} | {residual * 1e3:.2f} |",
                  flush=True)
    print(speed_model_rate(threads))


def fit(times: dict[tuple[int, int], float]) -> tuple[float, float, float, float]:
    """Least squares of t = c + L * fixed + L * k * expert over ``times`` ((L, k): seconds):
    (c, fixed, expert, the largest residual)."""
    import numpy as np

    keys = sorted(times)
    a = np.array([[1.0, n, n * k] for n, k in keys])
    y = np.array([times[key] for key in keys])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2]), float(np.abs(a @ coef - y).max())


def speed_model_rate(threads: int) -> str:
    """What the advisor's speed model assumes the same kernels read at on this machine (its RAM
    probe, run now, through app/advisor/device_rates.py): the rate the measured one above is
    to be held against (issue 19: the probe's figures did not follow decode across hosts)."""
    from app.advisor.device_rates import device_rates
    from app.engine.llama_params import default_threads
    from app.engine.placement import CPU_DEVICE
    from app.hardware.bandwidth import measure_ram

    ram = measure_ram()
    rates, _ = device_rates({}, ram, threads, default_threads(), file_layout=True)  # (physical cores)
    low, high = (rates[CPU_DEVICE].read_rate(end, gpu=False) / 1e9 for end in (0, 1))
    return (f"speed model's read rate for routed experts in the file's layout here: {low:.1f}-{high:.1f} "
            f"GB/s (RAM probe: {ram.read_bw / 1e9:.1f} GB/s all cores, {ram.read_bw_1 / 1e9:.1f} GB/s "
            f"one thread)")


if __name__ == "__main__":
    main()
