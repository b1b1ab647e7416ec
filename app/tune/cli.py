"""``moedesk-cli bench`` and ``moedesk-cli tune``: measured placements from the terminal."""

from __future__ import annotations

import argparse
import threading
from dataclasses import replace
from pathlib import Path

from app.cli_load import add_expert_cache_args
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.gguf.info import read_model
from app.tune.strategies import STRATEGIES, Budget, budget_for, describe


def gigabytes(value: str) -> int:
    try:
        gb = float(value.lower().removesuffix("gb").removesuffix("g"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected a size in GB, e.g. 12 or 24G") from None
    if gb <= 1:
        raise argparse.ArgumentTypeError("a VRAM budget must be more than 1 GB")
    return int(gb * 1e9)


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    for name, text in (("bench", "benchmark llama.cpp's strategies, the advisor's plan and the "
                        "autotuned plan at a VRAM budget (table, CSV, PNG)"),
                       ("tune", "find the fastest placement that fits, by short real runs, and remember it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("model", type=Path, help="a .gguf file (any shard of a split model)")
        p.add_argument("--vram-budget", type=gigabytes, default=None, metavar="GB",
                       help="plan for a GPU of this size (default: the GPU's free memory)")
        p.add_argument("--ctx", type=int, default=8192, help="context size (default 8192)")
        p.add_argument("--threads", type=int, default=0, help="CPU threads (0: physical cores)")
        p.add_argument("--tune-seconds", type=float, default=240.0,
                       help="time limit of the autotune search (default 240; 0 skips it in bench)")
        p.add_argument("--decode-depth", type=int, default=0, metavar="TOKENS",
                       help="also measure decode after a prompt of this many tokens, and rank "
                       "placements by it (needs --ctx above it; classic offload keeps part of "
                       "the KV cache in RAM)")
        if name == "bench":
            p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
            p.add_argument("--sweep", type=int, default=None, metavar="STEP",
                           help="also measure experts of the first 0, STEP, 2*STEP... layers in RAM")
            p.add_argument("--repeats", type=int, default=3,
                           help="rounds: each placement loaded and measured once a round, "
                           "rounds interleaved, the medians count (default 3)")
            p.add_argument("--out", type=Path, default=Path("bench-report"),
                           help="folder for report.csv and report.png (default ./bench-report)")
            add_expert_cache_args(p, mode_help="also measure hot experts in VRAM (engine patch 0004)",
                                  size_help="with --expert-cache: one row, every layer's experts "
                                  "in RAM and a cache of this many experts a layer (e.g. 32) or this "
                                  "VRAM (e.g. 4GiB); without: a row per split of the budget (whole "
                                  "layers, half and half, all cache), each cache sized to fit")
        p.set_defaults(func=run)
    probe = sub.add_parser("probe-cpu", help="time llama.cpp's CPU kernels on routed experts by "
                           "decoding (about half a minute); the advisor then predicts decode with "
                           "experts in RAM beside a GPU from it")
    probe.add_argument("--threads", type=int, default=0, help="CPU threads (0: physical cores, "
                       "as the engine decodes with)")
    probe.add_argument("--dir", type=Path, default=None,
                       help="where to write the probe's models (3.4 GB) while it runs (default: temp)")
    probe.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE",
                       help="time these expert types too, against Q4_0 (repeatable; e.g. Q4_K, "
                       "Q6_K, IQ1_M: your model's; tuning a model times its own)")
    probe.set_defaults(func=probe_cpu)


def probe_cpu(args: argparse.Namespace) -> int:
    from app.hardware.expert_read import record_expert_read
    from app.tune.expert_read_probe import PROBE_TYPES, ProbeError, measure_expert_read, type_speeds

    unknown = [q for q in args.types if q not in PROBE_TYPES]
    if unknown:
        print(f"cannot time {', '.join(unknown)}: the probe writes experts as {', '.join(PROBE_TYPES)}")
        return 2

    def show(line: str) -> None:
        print(f"  {line}", flush=True)

    with EngineClient.spawn() as client:
        try:
            rate = measure_expert_read(client, threads=args.threads or None, folder=args.dir, wide=True,
                                       progress=show)
            rate = replace(rate, type_speeds=dict(type_speeds(client, args.types, rate, folder=args.dir,
                                                              progress=show)))
        except ProbeError as exc:
            print(f"not measured: {exc}")
            return 1
    record_expert_read(rate)
    print(f"{rate.describe()}; remembered for this machine")
    return 0


def _hot_experts(client: EngineClient, has_gpu: bool) -> bool:
    """Whether the engine can keep hot experts in VRAM: patch 0004 in its build and a GPU."""
    return has_gpu and client.info().expert_cache_patch


def _budget(client: EngineClient, requested: int | None) -> tuple[Budget, bool, list[str]]:
    """The VRAM budget, whether this engine has a GPU at all, and notes for the user."""
    gpus = [d for d in client.info().devices if d.kind == "gpu"]
    notes = []
    if not gpus:
        notes.append("no GPU in this engine build: placements are planned for a GPU of the budget "
                     "but everything runs on the CPU")
        return Budget("CUDA0", requested or int(24e9)), False, notes
    gpu = gpus[0]
    if requested and requested > gpu.memory_free:
        notes.append(f"the budget is more than {gpu.name}'s free memory ({gpu.memory_free / 1e9:.1f} GB)")
    return budget_for(gpus, requested), True, notes


def run(args: argparse.Namespace) -> int:
    from app.advisor.planner import plan_for
    from app.hardware import detect
    from app.tune.autotune import TuneProgress, autotune, machine_id, remember, tune_key
    from app.tune.expert_read_probe import ensure_expert_read, expert_types
    from app.tune.measure import Measurer
    from app.tune.strategies import advisor

    workload = _workload(args)
    if workload.context_needed() > args.ctx:
        print(f"the longest run needs a larger context: use --ctx "
              f"{workload.context_needed() + 1024} or more")
        return 2
    model = read_model(args.model)
    hardware = detect(nvml=False)
    base = PlacementPlan(n_ctx=args.ctx, n_threads=args.threads)
    cancel = threading.Event()
    with EngineClient.spawn() as client:
        budget, has_gpu, notes = _budget(client, args.vram_budget)
        for note in notes:
            print(f"note: {note}")
        print(f"{args.model.name}: {model.n_layer} layers, budget {budget.describe()}")
        if has_gpu:  # the advisor's decode predictions from this CPU's own kernels (once)
            kernels = ensure_expert_read(client, args.threads or None, types=expert_types(model),
                                         progress=lambda line: print(f"  kernel probe: {line}", flush=True))
            if kernels is not None:
                print(f"note: {kernels.describe()}")
        measurer = Measurer(client, args.model, gpu_budget=budget.usable, cancel=cancel)
        try:
            if args.command == "tune":
                def show(p: TuneProgress) -> None:
                    if p.last is not None:
                        print(f"    -> {p.last.summary()}", flush=True)
                    if p.label != "done":
                        print(f"  [{p.done + 1}] {p.label}", flush=True)

                if has_gpu:
                    start, tune_budget = advisor(model, budget, base, hardware), budget
                else:  # tune what a CPU-only machine can change: threads, batch sizes
                    start, tune_budget = plan_for(model, hardware, args.ctx, base).placement, None
                result = autotune(measurer, model, start, tune_budget,
                                  physical_cores=hardware.cpu.physical_cores,
                                  time_limit=args.tune_seconds, progress=show, workload=workload,
                                  hot_experts=_hot_experts(client, has_gpu))
                best = result.best
                if not best.ok:
                    print(f"no placement could be measured: {best.error}")
                    return 1
                gpu = budget.gpu if has_gpu else None  # as the app's loads look it up
                remember(tune_key(args.model, machine_id(hardware.cpu.model, gpu), args.vram_budget),
                         result)
                deep = (f" ({best.deep_decode_tps:.1f} at depth {best.decode_depth})"
                        if best.decode_depth else "")
                print(f"best: {describe(best.plan, model.n_layer)}: decode {best.decode_tps:.1f} t/s{deep}, "
                      f"prefill {best.prefill:.1f} t/s ({len(result.tried)} runs, {result.seconds:.0f} s"
                      + (f", {result.stopped}" if result.stopped else "") + "); remembered for this machine")
                return 0
            return _bench(args, measurer, model, budget, base, hardware, workload,
                          _hot_experts(client, has_gpu))
        except KeyboardInterrupt:
            cancel.set()
            print("\nstopped")
            return 130


def _workload(args: argparse.Namespace):  # -> Workload
    """What each measurement runs: the report's workload for bench, autotune's for tune."""
    from dataclasses import replace

    from app.tune.autotune import TUNE_WORKLOAD
    from app.tune.report import REPORT_WORKLOAD

    if args.command == "tune":
        return replace(TUNE_WORKLOAD, decode_depth=args.decode_depth)
    return replace(REPORT_WORKLOAD, repeats=max(1, args.repeats), decode_depth=args.decode_depth)


def _bench(args, measurer, model, budget, base, hardware, workload, hot_experts: bool) -> int:
    from app.tune.report import CacheRows, run_bench, summary_lines, table_lines, write_csv

    csv_path = args.out / "report.csv"
    cache_rows = None
    if args.expert_cache != "off":
        slots, size = args.expert_cache_size
        cache_rows = CacheRows(args.expert_cache, slots, size, args.expert_cache_uploads)
    rows, _tuned = run_bench(measurer, model, budget, base, physical_cores=hardware.cpu.physical_cores,
                             strategies=tuple(args.strategies), tune_seconds=args.tune_seconds,
                             sweep_step=args.sweep, hardware=hardware, workload=workload,
                             say=lambda line: print(line, flush=True),
                             on_rows=lambda so_far: write_csv(so_far, model.n_layer, csv_path),
                             cache_rows=cache_rows, hot_experts=hot_experts)
    print()
    print("\n".join(table_lines(rows, model.n_layer)))
    for line in summary_lines(rows):
        print(line)
    print(f"wrote {csv_path}")
    try:
        from app.ui.bench_chart import render_report_png
    except ImportError as exc:  # a headless install without Qt: the CSV is the report
        print(f"no PNG chart ({exc.name} is not installed)")
        return 0
    png = render_report_png(csv_path, args.out / "report.png", title=f"{args.model.name}, "
                            f"{sum(budget.vram_by_gpu.values()) / 1e9:.0f} GB VRAM budget")
    print(f"wrote {png}")
    return 0
