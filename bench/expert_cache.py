"""Hot experts in VRAM (engine patch 0004) against llama.cpp's best placement at one budget.

A budget is a share of the model's routed-expert bytes that VRAM has room for (what is left
after the rest of the model, the KV cache and compute buffers): 0.125 is what a 24 GB GPU
leaves for the full Qwen3-235B-A22B at Q4_K_M, 0.25 a 48 GB one. At that budget:

* n-cpu-moe N: llama.cpp's --n-cpu-moe: the routed experts of the first N layers in RAM, the
  other layers' on the GPU; N_min is the fewest layers in RAM that fit the budget, and
  N_min+1, N_min+2 are measured too (fewer expert bytes in VRAM: never faster, measured anyway);
* cache static: every layer's experts in RAM, plus a VRAM cache of the same bytes spread over
  the layers (slots per layer), filled with each layer's most chosen experts of a warm-up run;
  the two parts of a layer added on the GPU (patch 0004's merge);
* cache dynamic: the same, refreshed after every token from routing (patch 0004's policy:
  each expert scored by its selections, halved in weight after 16 tokens; one scoring 2 more
  than the lowest held replaces it, copied in while the next token decodes, one a layer and
  --uploads a token at most: the engine's "thrifty" policy); "eager": the engine's eager policy
  (half-life 4 tokens, a margin of 0.5, two copies a layer a token: more copies, more hits);
* cache+layers: half the budget as whole expert layers on the GPU, half as a cache on the rest;
* ram: every layer's experts in RAM, no cache (the floor).

Each placement is loaded once a round and measured in --repeats interleaved rounds: prefill
of a --prefill-tokens prompt (random tokens), then --tokens greedy decode steps after a
--prompt-tokens prompt; decode t/s = tokens / the steps' time, and beside it 1 / the median
step (the steady state, without the dynamic cache's first steps after a prompt). The first
round also checks that greedy output with the cache equals the output without it (same model,
experts in RAM) and reports the largest logit difference. Run on the accelerator machine
(bench/jobs/expert-cache-h200.sh):

    python bench/expert_cache.py --model /tmp/q30-real.gguf --budget 0.125 --budget 0.25
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field, replace

# llama.cpp's libraries before numpy's (gguf imports numpy): see bench/engine_overhead.py
import llama_cpp  # noqa: I001
import numpy as np

from app import hardware
from app.advisor.expert_cache import predicted_hit_rate
from app.advisor.planner import evaluate
from app.advisor.speed import SpeedRange, predict
from app.engine import ggml_backend
from app.engine.expert_cache import COPY_POLICIES
from app.engine.llama_params import context_params, model_params
from app.engine.placement import ExpertCachePolicy, PlacementPlan
from app.engine.routing_stats import routing_counters, routing_stats
from app.gguf.info import GGUFModel, read_model
from app.hardware.bandwidth import RamBandwidth, ram_bandwidth
from app.hardware.h2d import host_copy_probe


@dataclass
class Placement:
    name: str
    experts_in_ram: int  # first N layers' experts in RAM
    cache_slots: int = 0  # per RAM layer
    dynamic: bool = False
    vram_expert_bytes: int = 0
    overlap: bool = True  # VRAM experts computed while the CPU computes (LLAMA_MOE_CACHE_OVERLAP)
    policy: ExpertCachePolicy = "thrifty"  # dynamic: which experts are copied in (COPY_POLICIES)
    no_host: bool = False  # llama.cpp's no_host: CPU weights in the CPU's repacked layouts
    mapped: bool | None = None  # the model file mapped (mmap); None: as --no-mmap says
    uploads: int = 0  # dynamic: copies a token at most (--uploads; 0: the policy's own)


@dataclass
class Result:
    prefill: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    # 1 / the median decode step: the steady state, without the dynamic cache's first steps
    # after the prompt (their copies) or a stray slow step
    steady: list[float] = field(default_factory=list)
    hit_rate: float | None = None
    uploads: int = 0  # since the load: the warm-up's and the prompts' too
    decode_uploads: float = 0.0  # a decoded token, over the measured decode
    tokens: list[int] = field(default_factory=list)
    logits: np.ndarray | None = None


def layer_expert_bytes(model_path: str) -> tuple[int, int, int, int]:
    """(n_layer, n_expert, bytes of one layer's routed experts, of one expert)."""
    info = read_model(model_path)
    per_expert = info.expert_bytes()
    return info.n_layer, info.n_expert, per_expert * info.n_expert, per_expert


def engine_plan(placement: Placement, threads: int, n_ctx: int, allow_host: bool,
                use_mmap: bool) -> PlacementPlan:
    """The plan the engine loads ``placement`` by (its cache set up by the bench itself)."""
    return PlacementPlan(experts_in_ram=placement.experts_in_ram, n_threads=threads,
                         n_ctx=n_ctx, n_batch=512, n_ubatch=512, flash_attn="on",
                         repack=not allow_host, no_host=placement.no_host, use_mmap=use_mmap)


def advisor_plan(placement: Placement, threads: int, n_ctx: int, use_mmap: bool) -> PlacementPlan:
    """``placement`` as the advisor plans it, its cache included."""
    plan = engine_plan(placement, threads, n_ctx, False, use_mmap)
    if not placement.cache_slots:
        return plan
    return replace(plan, expert_cache="dynamic" if placement.dynamic else "static",
                   expert_cache_slots=placement.cache_slots, expert_cache_policy=placement.policy,
                   expert_cache_uploads=placement.uploads)


@dataclass
class Predictor:
    """The advisor's decode prediction for a placement on this machine (its probes and GPUs)."""
    model: GGUFModel
    machine: hardware.Hardware
    ram: RamBandwidth
    threads: int
    n_ctx: int
    n_prompt: int
    n_gen: int
    profile: list[list[int]]

    def decode(self, placement: Placement, use_mmap: bool) -> SpeedRange | None:
        plan = advisor_plan(placement, self.threads, self.n_ctx, use_mmap)
        view = evaluate(self.model, self.machine, plan, ram=self.ram, predict_speed=False)
        if not view.gpus:
            return None  # no GPU seen (the dev machine's host packs): nothing to predict
        speed = predict(self.model, view.placement, {g.device: g.gpu for g in view.gpus}, self.ram,
                        self.machine.cpu.physical_cores, self.n_prompt, self.n_gen, profile=self.profile)
        return speed.decode


class Loaded:
    def __init__(self, path: str, placement: Placement, n_layer: int, threads: int, n_ctx: int,
                 profile: list[list[int]] | None, allow_host: bool = False, uploads: int = 0,
                 use_mmap: bool = True) -> None:
        plan = engine_plan(placement, threads, n_ctx, allow_host, use_mmap)
        callback = llama_cpp.llama_progress_callback(lambda _f, _u: True)
        self._mparams = model_params(plan, n_layer, read_model(path).architecture, callback)
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), self._mparams.params)
        assert self.model, "load failed"
        self.ctx = llama_cpp.llama_init_from_model(self.model, context_params(plan))
        assert self.ctx, "context failed"
        ggml_backend.routing_enable(self.ctx, True)
        self.n_layer = n_layer
        self.n_expert = read_model(path).n_expert
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        self.placement = placement
        if placement.cache_slots:
            slots = [placement.cache_slots if il < placement.experts_in_ram else 0 for il in range(n_layer)]
            os.environ["LLAMA_MOE_CACHE_OVERLAP"] = "1" if placement.overlap else "0"
            held = ggml_backend.cache_init(self.ctx, slots, allow_host)
            assert held > 0, f"cache init failed ({held})"
            self.cache_bytes = held
            assert profile is not None
            for il in range(placement.experts_in_ram):
                ranked = sorted(range(len(profile[il])), key=lambda e: -profile[il][e])
                ggml_backend.cache_set_experts(self.ctx, il, ranked[:placement.cache_slots])
            if placement.dynamic:
                policy = COPY_POLICIES[placement.policy]
                ggml_backend.cache_set_policy(self.ctx, uploads or policy.per_layer * n_layer,
                                              policy.per_layer, policy.half_life, policy.margin)

    def decode(self, tokens: list[int], pos0: int, want_logits: bool) -> np.ndarray | None:
        """Decode ``tokens`` from position ``pos0``; the last one's logits if asked for."""
        b = self.batch
        for start in range(0, len(tokens), 512):
            chunk = tokens[start:start + 512]
            b.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = pos0 + start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = start + i == len(tokens) - 1
            assert llama_cpp.llama_decode(self.ctx, b) == 0, "decode failed"
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy() if want_logits else None

    def run(self, prompt: list[int], n_gen: int, keep: bool) -> tuple[float, float, list[int], np.ndarray]:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        t0 = time.perf_counter()
        logits = self.decode(prompt, 0, True)
        t1 = time.perf_counter()
        self.before_decode = routing_counters(self.ctx, self.n_layer, self.n_expert)
        out, kept = [], []
        self.token_seconds: list[float] = []  # each decode step's, for the steady state
        for i in range(n_gen):
            token = int(np.argmax(logits))
            out.append(token)
            if keep:
                kept.append(logits)
            start = time.perf_counter()
            logits = self.decode([token], len(prompt) + i, True)
            self.token_seconds.append(time.perf_counter() - start)
        prefill = len(prompt) / (t1 - t0)
        # n_gen decode steps (the first token came from the prompt's logits; the last step's
        # logits go unused); before the eighteenth session's second lease this divided n_gen - 1
        decode = n_gen / sum(self.token_seconds) if n_gen else 0.0
        return prefill, decode, out, np.array(kept)

    def hit_rate(self) -> tuple[float | None, int]:
        stats = ggml_backend.cache_stats(self.ctx, self.n_layer, self.n_expert)
        if stats is None:
            return None, 0
        served = sum(stats.hits) + sum(stats.misses)
        return (sum(stats.hits) / served if served else None), stats.uploads

    def counts(self, n_expert: int) -> list[list[int]]:
        return ggml_backend.routing_counts(self.ctx, self.n_layer, n_expert)[1]

    def decode_routing(self, n_expert_used: int) -> str:
        """Skew and locality of the routing of the last run's decode (its prompt left out)."""
        counted = routing_counters(self.ctx, self.n_layer, self.n_expert) - self.before_decode
        return routing_stats(counted, n_expert_used).describe()

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


@dataclass
class Shape:
    n_layer: int
    n_expert: int
    layer_bytes: int  # one layer's routed experts
    expert_bytes: int  # one expert


def placements_at(budget: float, shape: Shape, modes: set[str], sweep: int,
                  mapped_too: bool = False) -> list[Placement]:
    """What the budget (a share of the expert bytes) allows, for each mode asked for;
    ``mapped_too``: the sweep also with the file mapped (llama.cpp's default, whose decode can
    beat pinned memory's), so that "best n-cpu-moe" is the best of both."""
    n_layer, layer_bytes, per_expert = shape.n_layer, shape.layer_bytes, shape.expert_bytes
    room = budget * layer_bytes * n_layer
    n_min = n_layer - int(room // layer_bytes)
    slots = int(room // (per_expert * n_layer))
    cache_bytes = slots * per_expert * n_layer
    found: list[Placement] = []
    if "ram" in modes:
        found.append(Placement("ram (no cache)", n_layer))
    if "sweep" in modes:
        for n in range(n_min, min(n_layer, n_min + sweep) + 1):
            found.append(Placement(f"n-cpu-moe {n}", n, vram_expert_bytes=(n_layer - n) * layer_bytes))
            if mapped_too:
                found.append(Placement(f"n-cpu-moe {n}, mmap", n, mapped=True,
                                       vram_expert_bytes=(n_layer - n) * layer_bytes))
    if slots and "static" in modes:
        found.append(Placement(f"cache static {slots}/layer", n_layer, slots, vram_expert_bytes=cache_bytes))
    if "nohost" in modes:
        found.append(Placement(f"n-cpu-moe {n_min}, no_host", n_min, no_host=True,
                               vram_expert_bytes=(n_layer - n_min) * layer_bytes))
    if slots and "serial" in modes:
        found.append(Placement(f"cache static {slots}/layer, no overlap", n_layer, slots,
                               vram_expert_bytes=cache_bytes, overlap=False))
    if slots and "dynamic" in modes:
        found.append(Placement(f"cache dynamic {slots}/layer", n_layer, slots, dynamic=True,
                               vram_expert_bytes=cache_bytes))
    if slots and "eager" in modes:
        found.append(Placement(f"cache dynamic {slots}/layer, eager", n_layer, slots, dynamic=True,
                               vram_expert_bytes=cache_bytes, policy="eager"))
    if "mix" in modes:
        gpu_layers = int(room / 2 // layer_bytes)
        in_ram = n_layer - gpu_layers
        mix_slots = int((room - gpu_layers * layer_bytes) // (per_expert * in_ram))
        if gpu_layers and mix_slots:
            found.append(Placement(f"{gpu_layers} layers + cache {mix_slots}/layer", in_ram, mix_slots,
                                   dynamic=True, vram_expert_bytes=gpu_layers * layer_bytes
                                   + mix_slots * per_expert * in_ram))
    print(f"\n=== budget {budget:g} of the expert bytes: {room / 2**30:.2f} GiB "
          f"(n-cpu-moe >= {n_min}; cache {slots} experts a layer)")
    return found


def agreement(r: Result, reference: Result | None) -> tuple[str, str]:
    """(greedy output the same as without the cache?, largest logit difference while it is)."""
    if reference is None or r is reference or r.logits is None or reference.logits is None or not r.tokens:
        return "-", "-"
    pairs = list(zip(r.tokens, reference.tokens, strict=False))
    upto = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
    same = "yes" if r.tokens == reference.tokens else f"first {upto} tokens"
    n = max(upto, 1)
    return same, f"{np.abs(r.logits[:n] - reference.logits[:n]).max():.3g}"


def print_table(placements: list[Placement], results: dict[str, Result], reference: Result | None,
                profile: list[list[int]], n_expert: int, k: int,
                predicted_decode: dict[str, SpeedRange | None]) -> None:
    best_sweep = max((r for name, r in results.items() if name.startswith("n-cpu-moe")),
                     key=lambda r: statistics.median(r.decode), default=None)
    print("| placement | VRAM for experts GiB | prefill t/s | decode t/s | vs best n-cpu-moe | "
          "median step t/s (ratio) | decode predicted (advisor) | cache hit rate | predicted (advisor) | "
          "uploads (a decoded token) | greedy output = ram | max logit diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in placements:
        r = results[p.name]
        dec = statistics.median(r.decode)
        ratio = f"{dec / statistics.median(best_sweep.decode):.2f}x" if best_sweep else "-"
        steady = statistics.median(r.steady)
        steady_ratio = f" ({steady / statistics.median(best_sweep.steady):.2f}x)" if best_sweep else ""
        same, diff = agreement(r, reference)
        hit = f"{r.hit_rate:.1%}" if r.hit_rate is not None else "-"
        # what the advisor expects of a cache ranked by this profile (the warm-up's)
        predicted = "-"
        if p.cache_slots:
            predicted = str(predicted_hit_rate(p.cache_slots, n_expert, k, profile,
                                               list(range(p.experts_in_ram)),
                                               "dynamic" if p.dynamic else "static", p.policy, p.uploads))
        print(f"| {p.name} | {p.vram_expert_bytes / 2**30:.2f} | {statistics.median(r.prefill):.1f} | "
              f"{dec:.2f} | {ratio} | {steady:.2f}{steady_ratio} | {predicted_decode.get(p.name) or '-'} | "
              f"{hit} | {predicted} | "
              f"{r.uploads} ({r.decode_uploads:.1f}) | {same} | {diff} |")
    # the planner keeps whichever split of the VRAM it predicts to decode fastest
    # (app/advisor/planner.py): what a user gets at this budget, from the placements measured
    weighed = {name: speed.mid for name, speed in predicted_decode.items()
               if speed is not None and not name.startswith("ram")}
    if weighed and best_sweep:
        pick = max(weighed, key=lambda name: weighed[name])
        dec = statistics.median(results[pick].decode)
        print(f"the advisor's pick (fastest predicted of those measured): {pick}, {dec:.2f} t/s, "
              f"{dec / statistics.median(best_sweep.decode):.2f}x the best n-cpu-moe")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--budget", type=float, action="append", help="share of expert bytes (0.125)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--depth", type=int, default=0, help="decode after a prompt this long instead")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sweep", type=int, default=2, help="n-cpu-moe points past N_min")
    parser.add_argument("--modes", default="ram,sweep,static,serial,dynamic,mix",
                        help="also: eager (dynamic, the engine's eager policy), nohost (n-cpu-moe "
                             "N_min with no_host)")
    parser.add_argument("--uploads", type=int, default=0,
                        help="dynamic: expert copies started per token at most (default: one per layer)")
    parser.add_argument("--no-mmap", action="store_true",
                        help="read the model in: with a GPU, CPU weights in its pinned host memory (the "
                             "dynamic cache's copies then run beside decoding); the n-cpu-moe sweep "
                             "runs mapped too")
    parser.add_argument("--profile", action="store_true",
                        help="print the scheduler's time per graph (LLAMA_SCHED_PROFILE, patch 0004)")
    parser.add_argument("--allow-host", action="store_true",
                        help="without a GPU: cache packs in RAM, weights not repacked (checks the split)")
    args = parser.parse_args()

    if args.profile:
        os.environ["LLAMA_SCHED_PROFILE"] = "1"
    shape = Shape(*layer_expert_bytes(args.model))
    n_layer, n_expert = shape.n_layer, shape.n_expert
    k = read_model(args.model).n_expert_used
    print(f"model {args.model}: {n_layer} layers, {n_expert} experts (top-{k}), "
          f"{shape.layer_bytes / 2**20:.0f} MiB of routed experts a layer, "
          f"{shape.expert_bytes / 2**20:.2f} MiB an expert")
    n_prompt = args.depth or args.prompt_tokens
    n_ctx = max(2048, n_prompt + args.tokens + 64, args.prefill_tokens + 64)

    # the warm-up profile: routing counts of a different prompt and its continuation
    warm = Loaded(args.model, Placement("ram", n_layer), n_layer, args.threads, n_ctx, None, args.allow_host)
    rng = np.random.default_rng(7)
    top = min(30000, warm.n_vocab)
    prompt = [int(x) for x in rng.integers(1, top, n_prompt)]
    warmup_prompt = [int(x) for x in rng.integers(1, top, 64)]
    long_prompt = [int(x) for x in rng.integers(1, top, args.prefill_tokens)]
    warm.run(warmup_prompt, 64, keep=False)
    profile = warm.counts(n_expert)
    warm.close()
    # the advisor's view of this machine: detected GPUs, the RAM and host-to-GPU copy probes
    ram = ram_bandwidth()
    # what the decode predictions rest on (issue 19: hosts whose probes differ decode alike)
    print(f"RAM probe: read {ram.read_bw / 1e9:.1f} GB/s all cores, {ram.read_bw_1 / 1e9:.1f} GB/s a thread")
    if ram.host_copy is None:  # a failed copy probe is not cached (the thirty-sixth session's fresh
        # host had none here, after a 17 GB write and the warm-up's engine): once more, and why not
        copy_probe = host_copy_probe()
        print(copy_probe.describe())
        ram = replace(ram, host_copy=copy_probe.rates)
    if ram.host_copy:  # the dynamic cache's copies from pinned memory run over this link
        print(f"host-to-GPU copy probe: pinned {ram.host_copy.pinned / 1e9:.1f} GB/s, "
              f"mapped file {ram.host_copy.from_file / 1e9:.1f} GB/s")
    predictor = Predictor(read_model(args.model), hardware.detect(), ram, args.threads, n_ctx,
                          n_prompt, args.tokens, profile)

    for budget in args.budget or [0.125]:
        found = placements_at(budget, shape, set(args.modes.split(",")), args.sweep, args.no_mmap)
        placements = [replace(p, uploads=args.uploads) if p.dynamic else p for p in found]
        results = {p.name: Result() for p in placements}
        reference: Result | None = None
        mmap = {p.name: not args.no_mmap if p.mapped is None else p.mapped for p in placements}
        predicted_decode = {p.name: predictor.decode(p, mmap[p.name]) for p in placements}
        for round_ in range(args.repeats):
            for p in placements:
                loaded = Loaded(args.model, p, n_layer, args.threads, n_ctx, profile, args.allow_host,
                                p.uploads, use_mmap=mmap[p.name])
                print(f"--- {p.name} (round {round_ + 1})", flush=True)
                loaded.run(prompt[:16], 8, keep=False)  # first-touch costs (page faults) out of the figures
                prefill, _, _, _ = loaded.run(long_prompt, 2, keep=False)
                _, before = loaded.hit_rate()
                _, decode, tokens, logits = loaded.run(prompt, args.tokens, keep=round_ == 0)
                r = results[p.name]
                r.prefill.append(prefill)
                r.decode.append(decode)
                r.steady.append(1.0 / statistics.median(loaded.token_seconds))
                r.hit_rate, r.uploads = loaded.hit_rate()
                r.decode_uploads = (r.uploads - before) / max(args.tokens, 1)
                if round_ == 0:
                    r.tokens, r.logits = tokens, logits
                    if p.name.startswith("ram"):
                        reference = r
                        print("routing during the decode:", loaded.decode_routing(k))
                loaded.close()
        print_table(placements, results, reference, profile, n_expert, k, predicted_decode)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
