"""Experts streamed from the SSD (engine patch 0005) against plain mmap page faults, side by side.

A model larger than the memory available: the engine process runs in a cgroup whose memory
limit (page cache included) is the model's size divided by --factor (2: the model is twice the
memory; 4: four times). At each factor, in interleaved rounds, each mode is loaded in a fresh
engine with the page cache dropped, warmed up with one short answer, then measured on a second:

* off: llama.cpp's mapped file, weights not repacked (today's way for a model larger than RAM):
  the routed experts come in by page faults;
* advise: the engine asks the kernel for each token's routed experts before the matmuls read them;
* cache: a RAM expert cache sized by the advisor's plan for that memory, missing experts read by
  parallel preads (O_DIRECT), starting from the routing profile of one earlier run of the
  model with another prompt (each run gets a fresh MoE Desk folder holding that profile);
* cache-buffered: the same with buffered preads (LLAMA_MOE_STREAM_DIRECT=0): experts the page
  cache holds (the prompt's prefill read them through the mapping) are copied, not read again.

Reported per run: decode t/s, what the engine counted (bytes read from storage per token, the
read throughput during decode, the RAM cache's hit rate and its reads' own speed), the advisor's
prediction for the plan, and OOM kills. The disk probe (expert-sized random reads at depth 16,
and one at a time) is printed first. Needs root (cgroups, drop_caches). Example:

    python bench/ssd_stream.py --model /tmp/q235-16l.gguf --factor 2 --factor 4 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memory_limit import memory_limit, oom_killed  # noqa: E402

from app import hardware  # noqa: E402
from app.advisor.memory import RAM_HEADROOM  # noqa: E402
from app.advisor.planner import evaluate  # noqa: E402
from app.engine.client import EngineClient  # noqa: E402
from app.engine.placement import PlacementPlan  # noqa: E402
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, Sampling  # noqa: E402
from app.engine.routing_profiles import PROFILE_FILE  # noqa: E402
from app.gguf.info import read_model  # noqa: E402
from app.hardware.bandwidth import ram_bandwidth  # noqa: E402
from app.hardware.disk import DiskSpeed, measure_disk  # noqa: E402
from app.hardware.model import Memory  # noqa: E402

# The warm-up answer and the measured one have prompts of different lengths, so that the
# measured tokens decode at positions the warm-up never reached (synthetic routing drifts
# with the position, as trained routing drifts with the text).
WARMUP = "Write a short story about a lighthouse keeper."
PROMPT = ("Write a long and careful story about a lighthouse keeper who finds a message in a "
          "bottle washed up after a winter storm, what the message says, who wrote it many years "
          "ago, why it took so long to arrive, and what she decides to do about it in the spring, "
          "told in her own words with the weather, the tides and the light in every scene.")


@dataclass
class Run:
    decode_tps: float
    bytes_per_token: float
    read_bps: float
    hit_rate: float | None
    stream_bps: float | None
    oom_kills: int


@dataclass
class Row:
    factor: float
    mode: str
    plan: str
    predicted: str
    runs: list[Run] = field(default_factory=list)


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    Path("/proc/sys/vm/drop_caches").write_text("3")


def plan_at(model_path: Path, limit: int, mode: str, threads: int, ctx: int,
            disk: DiskSpeed | None = None) -> tuple[PlacementPlan, str]:
    """The advisor's plan on this machine with ``limit`` bytes of memory, in ``mode``; its
    decode prediction from ``disk`` (the probe's figures)."""
    model = read_model(model_path)
    machine = hardware.detect()
    # the advisor keeps RAM_HEADROOM free for the desktop's other programs; the cgroup holds
    # the engine alone, so its whole limit is the engine's budget
    room = limit + RAM_HEADROOM
    machine = replace(machine, memory=Memory(total=room, available=room, swap_total=0))
    # with a GPU the routed experts stream through RAM and the rest sits in VRAM (the case the
    # product plans for such a machine); without one, everything is in the mapped file
    base = PlacementPlan(n_ctx=ctx, n_threads=threads, repack=False, use_mmap=True,
                         experts_in_ram="all")
    if not machine.gpus:
        base = replace(base, n_gpu_layers=0)
    plan = evaluate(model, machine, base, gpus=None if machine.gpus else [], ram=ram_bandwidth(),
                    disk=disk)
    placement = plan.placement
    if mode == "off":
        placement = replace(placement, expert_stream="off", expert_stream_bytes=0)
    elif mode == "advise":
        placement = replace(placement, expert_stream="advise", expert_stream_bytes=0)
    elif placement.expert_stream != "cache":
        raise SystemExit(f"the advisor planned no RAM cache at {limit / 2**30:.1f} GiB: {plan.reasons}")
    speed = str(plan.speed.decode) if plan.speed and mode.startswith("cache") else "-"
    return placement, speed


def fresh_home(seed: Path | None) -> Path:
    """A MoE Desk folder for one run: empty, or holding the routing profile of ``seed``'s."""
    home = Path(tempfile.mkdtemp(prefix="ssd-bench-home-"))
    if seed is not None:
        for found in seed.rglob(PROFILE_FILE):
            target = home / found.relative_to(seed)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(found, target)
    return home


def seed_profile(model_path: Path, placement: PlacementPlan, limit: int) -> Path:
    """A MoE Desk folder whose remembered routing profile comes from one earlier run of the
    model (another prompt): what a user who ran the model before has, and the RAM cache
    starts with."""
    home = fresh_home(None)
    measure(model_path, placement, limit, 32, {"MOEDESK_HOME": str(home)}, prompts=(WARMUP,))
    return home


def measure(model_path: Path, placement: PlacementPlan, limit: int, n_gen: int,
            env: dict[str, str], prompts: tuple[str, ...] = (WARMUP, PROMPT)) -> Run:
    drop_caches()
    with memory_limit(limit) as folder, EngineClient.spawn(env=env) as engine:
        (folder / "cgroup.procs").write_text(str(engine.pid))
        engine.load(LoadParams(model=str(model_path), placement=placement, telemetry=False))
        # a warm-up answer, then the measured one
        for prompt, n in zip(prompts, (8, n_gen)[-len(prompts):], strict=True):
            params = ChatParams(messages=[ChatMessage("user", prompt)],
                                sampling=Sampling(temperature=0.0, top_k=1, max_tokens=n,
                                                  ignore_eos=True, seed=0))
            before = engine.stats().storage
            stream = engine.chat(params)
            for _ in stream:
                pass
            result = stream.result
        after = engine.stats().storage
        kills = oom_killed(folder)
        engine.shutdown()
    assert after is not None and before is not None
    tokens = after.total_tokens - before.total_tokens
    read = after.total_bytes - before.total_bytes
    seconds = (tokens / result.decode_tps) if result.decode_tps > 0 else 0
    return Run(decode_tps=result.decode_tps, bytes_per_token=read / max(tokens, 1),
               read_bps=read / seconds if seconds else 0.0, hit_rate=after.ram_hit_rate,
               stream_bps=after.stream_read_bps, oom_kills=kills)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--factor", type=float, action="append", default=[],
                        help="model size / memory limit (repeatable; default 2 and 4)")
    parser.add_argument("--mode", action="append", default=[],
                        choices=("off", "advise", "cache", "cache-buffered"))
    parser.add_argument("--tokens", type=int, default=24, help="decoded tokens measured")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--ctx", type=int, default=2048)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: cgroup memory limits and dropping the page cache")
    model = read_model(args.model)
    size = sum(p.stat().st_size for p in model.shards)
    block = model.expert_bytes() // 3 or (4 << 20)
    drop_caches()
    disk = measure_disk(max(model.shards, key=lambda p: p.stat().st_size), block)
    print(f"model {args.model.name}: {size / 1e9:.1f} GB, {model.n_layer} layers, "
          f"{model.n_expert} experts (top-{model.n_expert_used})")
    print(f"disk probe ({'O_DIRECT' if disk.direct else 'buffered'}): sequential "
          f"{disk.seq_read_bw / 1e9:.2f} GB/s; {block / 2**20:.1f} MiB random reads: "
          f"{disk.random_read_bw / 1e9:.2f} GB/s at depth {disk.depth}, "
          f"{disk.random_read_bw_1 / 1e9:.2f} GB/s one at a time", flush=True)
    rows: list[Row] = []
    for factor in args.factor or [2.0, 4.0]:
        limit = int(size / factor)
        for mode in args.mode or ["off", "advise", "cache"]:
            placement, predicted = plan_at(args.model, limit, mode, args.threads, args.ctx, disk)
            rows.append(Row(factor, mode, placement.describe().split("\n")[0], predicted))
    seed = None
    if any(row.mode.startswith("cache") for row in rows):
        factor = max(args.factor or [2.0])
        placement, _ = plan_at(args.model, int(size / factor), "cache", args.threads, args.ctx)
        seed = seed_profile(args.model, placement, int(size / factor))
        print(f"routing profile remembered from one earlier run (x{factor:g}, another prompt)",
              flush=True)
    for round_ in range(args.repeats):
        for row in rows:
            limit = int(size / row.factor)
            placement, _ = plan_at(args.model, limit, row.mode, args.threads, args.ctx)
            t0 = time.perf_counter()
            env = {"LLAMA_MOE_STREAM_DIRECT": "0"} if row.mode == "cache-buffered" else {}
            home = fresh_home(seed)
            env["MOEDESK_HOME"] = str(home)
            run = measure(args.model, placement, limit, args.tokens, env)
            shutil.rmtree(home, ignore_errors=True)
            row.runs.append(run)
            hit = "-" if run.hit_rate is None else f"{run.hit_rate:.0%}"
            sbps = "-" if run.stream_bps is None else f"{run.stream_bps / 1e9:.2f}"
            print(f"round {round_ + 1} x{row.factor:g} ({limit / 2**30:.1f} GiB) {row.mode:6}: "
                  f"decode {run.decode_tps:.2f} t/s, {run.bytes_per_token / 1e9:.2f} GB/token from "
                  f"storage at {run.read_bps / 1e9:.2f} GB/s, RAM hit {hit}, stream reads {sbps} GB/s, "
                  f"OOM kills {run.oom_kills} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    print("| model / memory | mode | decode t/s (median) | vs off | GB/token from SSD | SSD GB/s "
          "during decode | RAM cache hits | stream reads GB/s (vs probe) | predicted | OOM |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base: dict[float, float] = {}
    for row in rows:
        med = statistics.median(r.decode_tps for r in row.runs)
        if row.mode == "off":
            base[row.factor] = med
        ratio = f"{med / base[row.factor]:.2f}x" if base.get(row.factor) else "-"
        hits = [r.hit_rate for r in row.runs if r.hit_rate is not None]
        sbps = [r.stream_bps for r in row.runs if r.stream_bps is not None]
        stream = (f"{statistics.median(sbps) / 1e9:.2f} ({statistics.median(sbps) / disk.random_read_bw:.0%})"
                  if sbps else "-")
        each = ", ".join(f"{r.decode_tps:.2f}" for r in row.runs)
        print(f"| x{row.factor:g} | {row.mode} | {med:.2f} ({each}) "
              f"| {ratio} | {statistics.median(r.bytes_per_token for r in row.runs) / 1e9:.2f} "
              f"| {statistics.median(r.read_bps for r in row.runs) / 1e9:.2f} "
              f"| {f'{statistics.median(hits):.0%}' if hits else '-'} | {stream} | {row.predicted} "
              f"| {sum(r.oom_kills for r in row.runs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
