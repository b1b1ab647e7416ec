"""The advisor's speed prediction against the real engine, placement by placement.

For each placement, the advisor predicts decode and prefill t/s as a range (app/advisor/
speed.py, from the RAM probe and the GPU's figures); then the engine loads the model with
that placement and runs chats (EOS ignored, greedy, a fresh prompt each run so no prefix is
reused), and the table shows the prediction, the median measurement and the error of the
range's middle. Run by hand; on the accelerator machine:

    python -m app.cli synth /tmp/q30.gguf --preset qwen3-30b-a3b
    python bench/predict_vs_measure.py --model /tmp/q30.gguf --threads 16 \\
        --placement gpu --placement experts-ram --placement first-24

and on a CPU, to see it work: ``--synth tiny`` writes the tiny model first.

Placements: ``gpu`` (everything on the GPU), ``experts-ram`` (all routed experts in RAM),
``first-N`` (routed experts of the first N layers in RAM), ``cpu`` (no GPU at all).

On the accelerator machine, after ``bench/gpu_session.sh build`` and ``model``:

    PYTHONPATH="$PWD:/tmp/moedesk-site" MOEDESK_HOME=/tmp/moedesk-home python3 \
        bench/predict_vs_measure.py --model /tmp/moedesk-q30.gguf --threads 16 \
        --placement gpu --placement experts-ram --placement first-24 --placement first-36
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from app import hardware
from app.advisor.planner import evaluate
from app.advisor.speed import Prediction, predict
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, Sampling
from app.errors import TelemetryUnavailableError
from app.gguf.info import GGUFModel, read_model
from app.hardware.bandwidth import RamBandwidth, ram_bandwidth
from app.synthetic import SyntheticSpec, write_synthetic_model

# A prompt of made-up words: varied tokens, as a user's text has. The eight words it repeated
# before chose 88-90 of 128 experts a layer in a 488-token ubatch of the Qwen3-30B shape with
# Qwen3-like routing (116 with uniform routing), where the speed model copies all of them for
# op offload: prefill read 18-30% low on the H100 hosts. 90 made-up words (484-501 tokens) choose
# 103-107 (124-127 with uniform routing).
LETTERS = string.ascii_lowercase


@dataclass
class Row:
    placement: str
    predicted: Prediction
    decode: float
    prefill: float
    prompt_tokens: int
    # with the kernel probe's rate remembered: the prediction from the RAM probe alone
    unprobed: Prediction | None = None
    # with the prompt's experts counted: the prediction that copies those (op offload)
    counted: Prediction | None = None


def placement(name: str, base: PlacementPlan) -> PlacementPlan:
    if name == "gpu":
        return replace(base, experts_in_ram="none")
    if name == "experts-ram":
        return replace(base, experts_in_ram="all")
    if name == "cpu":  # no op offload either: a GPU build would still run big matmuls there
        return replace(base, n_gpu_layers=0, experts_in_ram="none", op_offload=False)
    if name.startswith("first-") and name[6:].isdigit():
        return replace(base, experts_in_ram=int(name[6:]))
    raise SystemExit(f"unknown placement {name!r}: use gpu, experts-ram, first-N or cpu")


def prompt_text(n_words: int, run: int) -> str:
    """``n_words`` made-up words (2-8 letters), other ones each run: the engine reuses no cached
    prompt prefix."""
    rng = random.Random(run)
    words = ("".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 8))) for _ in range(n_words))
    return f"{run} Summarise: " + " ".join(words)


def measure(engine: EngineClient, model: str, plan: PlacementPlan, words: int, n_gen: int,
            repeats: int) -> tuple[float, float, int]:
    engine.load(LoadParams(model=model, placement=plan, telemetry=False))
    decode, prefill, prompt_tokens = [], [], 0
    for run in range(repeats + 1):  # the first is a warm-up
        params = ChatParams(messages=[ChatMessage("user", prompt_text(words, run))],
                            sampling=Sampling(temperature=0.0, top_k=1, max_tokens=n_gen,
                                              ignore_eos=True, seed=0))
        stream = engine.chat(params)
        for _ in stream:
            pass
        result = stream.result
        if run:
            decode.append(result.decode_tps)
            prefill.append(result.prefill_tps)
            prompt_tokens = result.prompt_tokens - result.cached_tokens
    engine.unload()
    return statistics.median(decode), statistics.median(prefill), prompt_tokens


def prompt_experts(engine: EngineClient, model: str, plan: PlacementPlan, words: int) -> float | None:
    """The share of a layer's routed experts one of the runs' prompts chose (the routing
    telemetry over its prefill and one token, the last layer left out: llama.cpp runs its FFN
    for the output token only); None where the engine counts no routing."""
    engine.load(LoadParams(model=model, placement=plan, telemetry=True))
    try:
        before = engine.routing()
        params = ChatParams(messages=[ChatMessage("user", prompt_text(words, 1))],
                            sampling=Sampling(temperature=0.0, top_k=1, max_tokens=1, seed=0))
        for _ in engine.chat(params):
            pass
        after = engine.routing()
    except TelemetryUnavailableError:
        return None
    finally:
        engine.unload()
    chosen = [sum(1 for a, b in zip(row_after, row_before, strict=True) if a > b)
              for row_after, row_before in zip(after.counts[:-1], before.counts[:-1], strict=True)]
    return sum(chosen) / (len(chosen) * after.n_expert) if chosen else None


def error(measured: float, low: float, high: float) -> str:
    mid = (low * high) ** 0.5
    inside = "in range" if low <= measured <= high else "outside"
    return f"{(mid - measured) / measured:+.0%} ({inside})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF model (written first with --synth)")
    parser.add_argument("--synth", metavar="PRESET", help="write a synthetic model of this preset")
    parser.add_argument("--placement", action="append", default=[])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--ubatch", type=int, default=512)
    parser.add_argument("--prompt-words", type=int, default=90, help="90: about 480 tokens")
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-mmap", action="store_true")
    parser.add_argument("--csv-session", metavar="ID",
                        help="also print each placement as a row of tests/data/prefill_*.csv, session ID")
    parser.add_argument("--no-repack", action="store_true",
                        help="CPU weights in the file's layout (as beside a GPU; the kernel probe's)")
    args = parser.parse_args(argv)
    if args.synth:
        args.model = args.model or Path(tempfile.mkdtemp()) / f"{args.synth}.gguf"
        if not args.model.exists():
            write_synthetic_model(args.model, SyntheticSpec.preset(args.synth))
    if args.model is None:
        parser.error("give --model, --synth, or both")
    model = read_model(args.model)
    machine = hardware.detect()
    ram = ram_bandwidth()
    print(f"RAM probe: read {ram.read_bw / 1e9:.1f} GB/s ({ram.threads} threads), one thread "
          f"{ram.read_bw_1 / 1e9:.1f} GB/s, copy {ram.copy_bw_1 / 1e9:.1f} GB/s, matmul "
          f"{ram.matmul_flops / 1e9:.0f} GFLOP/s", flush=True)
    if ram.host_copy:  # tests/data/prefill_*.csv's h2d_pageable, h2d_mapped, h2d_pinned
        mapped = f"{ram.host_copy.mapped / 1e9:.1f}" if ram.host_copy.mapped else "-"
        print(f"host-to-GPU copy probe: pageable {ram.host_copy.pageable / 1e9:.1f}, mapped file {mapped}, "
              f"pinned {ram.host_copy.pinned / 1e9:.1f} GB/s")
    # the kernel probe's figure (moedesk-cli probe-cpu), when this machine has one
    print(ram.expert_read.describe() if ram.expert_read else "CPU kernels not timed (no kernel probe)")
    base = PlacementPlan(n_threads=args.threads, n_ctx=args.ctx, n_ubatch=args.ubatch,
                         flash_attn="on", use_mmap=not args.no_mmap, repack=not args.no_repack)
    rows = []
    names = args.placement or ["gpu", "experts-ram", f"first-{model.n_layer // 2}"]
    with EngineClient.spawn() as engine:
        build = engine.info()
        print(f"build: {', '.join(build.backends)}; devices: "
              f"{', '.join(d.name for d in build.devices)}", flush=True)
        # what the prompts' tokens choose (a synthetic model's routing may choose fewer experts a
        # ubatch than independent tokens would: prefill then copies fewer)
        first = evaluate(model, machine, placement(names[0], base), ram=ram, predict_speed=False, build=build)
        share = prompt_experts(engine, str(args.model), first.placement, args.prompt_words)
        if share is not None:
            print(f"the prompt chose {share:.0%} of a layer's routed experts "
                  f"({share * model.n_expert:.0f} of {model.n_expert})", flush=True)
        for name in names:
            plan = placement(name, base)
            plan_view = evaluate(model, machine, plan, ram=ram, predict_speed=False, build=build)
            decode, prefill, n_prompt = measure(engine, str(args.model), plan_view.placement,
                                                args.prompt_words, args.n_gen, args.repeats)
            gpus, cores = {g.device: g.gpu for g in plan_view.gpus}, machine.cpu.physical_cores
            predicted = predict(model, plan_view.placement, gpus, ram, cores, n_prompt, args.n_gen)
            unprobed = (predict(model, plan_view.placement, gpus, replace(ram, expert_read=None), cores,
                                n_prompt, args.n_gen) if ram.expert_read else None)
            counted = (predict(model, plan_view.placement, gpus, ram, cores, n_prompt, args.n_gen,
                               prompt_experts=share) if share is not None else None)
            rows.append(Row(name, predicted, decode, prefill, n_prompt, unprobed, counted))
            print(f"{name}: decode {decode:.1f} t/s, prefill {prefill:.0f} t/s "
                  f"({n_prompt} prompt tokens)", flush=True)
    print(f"\n{model.name}, {args.n_gen} tokens after a {rows[0].prompt_tokens}-token prompt, "
          f"threads {args.threads or machine.cpu.physical_cores}, ctx {args.ctx}, ubatch {args.ubatch}")
    probed = any(r.unprobed for r in rows)
    counted = any(r.counted for r in rows)
    extra = (" decode from the RAM probe alone | error |" if probed else "") + (
        " prefill copying the prompt's experts | error |" if counted else "")
    print("| placement | decode predicted | measured | error | prefill predicted | measured | error |"
          + extra)
    print("|---|---|---|---|---|---|---|" + ("---|---|" if probed else "") + ("---|---|" if counted else ""))
    for r in rows:
        p = r.predicted
        decode_error = error(r.decode, p.decode.low, p.decode.high)
        prefill_error = error(r.prefill, p.prefill.low, p.prefill.high)
        alone = (f" {r.unprobed.decode} | {error(r.decode, r.unprobed.decode.low, r.unprobed.decode.high)} |"
                 if r.unprobed else "")
        if r.counted:
            c = r.counted.prefill
            alone += f" {c} | {error(r.prefill, c.low, c.high)} |"
        print(f"| {r.placement} | {p.decode} | {r.decode:.1f} | {decode_error} "
              f"| {p.prefill} | {r.prefill:.0f} | {prefill_error} |{alone}")
    for note in {n for r in rows for n in r.predicted.notes}:
        print(f"note: {note}")
    if args.csv_session:
        for line in csv_rows(args.csv_session, model, rows, ram, not args.no_mmap, share):
            print(f"csv: {line}")
    return 0


def csv_rows(session: str, model: GGUFModel, rows: list[Row], ram: RamBandwidth, mapped: bool,
             share: float | None) -> list[str]:
    """The runs as tests/data/prefill_*.csv's rows (its header's columns, GB/s and GFLOP/s), so
    that a lease's figures go in as measured: session, preset (a synthetic model's), layers,
    placement, use_mmap, n_prompt, prefill_tps, decode_tps, the RAM probe's four figures, the
    copy probe's three, the kernel probe's rate and its cost an expert (us), the prompt's share
    of a layer's experts."""
    def gb(value: float | None) -> str:
        return f"{value / 1e9:.1f}" if value else ""

    copy, kernels = ram.host_copy, ram.expert_read
    probes = [gb(ram.read_bw), gb(ram.read_bw_1), gb(ram.copy_bw_1), f"{ram.matmul_flops / 1e9:.0f}",
              gb(copy.pageable if copy else None), gb(copy.mapped if copy else None),
              gb(copy.pinned if copy else None), gb(kernels.bytes_per_s if kernels else None),
              f"{kernels.expert_seconds * 1e6:.1f}" if kernels and kernels.expert_seconds else "",
              f"{share:.2f}" if share is not None else ""]
    preset = model.name.removeprefix("MoE Desk synthetic ")
    # the writer's --layers: GLM-4.5's multi-token-prediction block is the file's one more
    return [",".join([session, preset, str(model.n_trunk_layers), r.placement, "1" if mapped else "0",
                      str(r.prompt_tokens), f"{r.prefill:.0f}", f"{r.decode:.1f}", *probes]) for r in rows]


if __name__ == "__main__":
    sys.exit(main())
