"""Engine overhead and routing-telemetry cost against bare llama-cpp-python.

For each placement, the same prompt (rendered with the model's chat template) is prefilled
and a fixed number of tokens generated (EOS ignored, greedy), three ways, loaded side by side
and run in turn (interleaved repeats, so drift hits all three alike):

* bare: llama_cpp.Llama in this process (its own eval/sample loop), placement applied through
  the same tensor_buft_overrides;
* engine: the MoE Desk engine process over its socket, routing telemetry off;
* engine+telemetry: the same with routing telemetry on;
* bare+capture: bare's own Llama with the engine's llama.cpp patch capturing routing (toggled
  between its runs): the patch's cost within one process, free of the spread between two
  processes of the same code (engine against engine+telemetry), which was +-5% in some runs;
* with --control, engine2: a second engine process without telemetry, to show that spread
  (engine2 against engine: the same code in two processes).

Times are taken where a user sees them: prefill t/s = prompt tokens / time to first token,
decode t/s = (tokens - 1) / (last token - first token). Medians of --repeats runs after one
warm-up. Beside them, prefill and decode as each side times it inside (bare: llama.cpp's own
prompt eval and eval timers; engine: from admitting the chat to the end of its prefill, and
from its first token to its last), and the time to first
token in ms split three ways (the engine's wait before admitting the chat: template and
tokenizer; its own time to first token, from admission to its first sample; the rest: the
request and the token across the socket and between threads), and the round trip of a
request the engine's event loop answers at once (cancelling a request that does not exist),
idle and while it decodes, to tell time spent in llama_decode from time spent around it.
Run by hand, e.g. on the accelerator machine:

    python -m app.synthetic /tmp/q30.gguf --preset qwen3-30b-a3b
    python bench/engine_overhead.py --model /tmp/q30.gguf --threads 16 \
        --placement gpu --placement experts-ram --placement experts-ram-half
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import statistics
import time
from dataclasses import dataclass

# llama.cpp's libraries before numpy's (gguf imports numpy): the other way round, loading a
# model on the CUDA build segfaults (seen on the H100 with llama-cpp-python 0.3.36)
import llama_cpp  # noqa: F401, I001

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, Sampling
from app.gguf.info import read_model

_watchdog_s = 0.0  # --watchdog: the longest one load or one run may take


def rearm_watchdog() -> None:
    """A step (a load, a run) begins: dump every thread's stack and exit if it hangs."""
    if _watchdog_s:
        faulthandler.dump_traceback_later(_watchdog_s, exit=True)


PROMPT_WORDS = ("expert", "router", "layer", "token", "memory", "cache", "offload", "decode")


@dataclass
class Run:
    prefill_tps: float
    decode_tps: float
    prefill_inner_tps: float  # as timed inside (see the module docstring)
    ttft_ms: float = 0.0  # time to first token where the user sees it
    ttft_inner_ms: float = 0.0  # the engine's own: from admitting the chat to its first sample
    queued_ms: float = 0.0  # the engine's, before admitting it: template and tokenizer
    decode_inner_tps: float = 0.0  # as timed inside (see the module docstring)


def prompt_text(n_words: int) -> str:
    words = [PROMPT_WORDS[(i * 7) % len(PROMPT_WORDS)] for i in range(n_words)]
    return "Summarise: " + " ".join(words)


def plans(names: list[str], n_layer: int, base: PlacementPlan) -> dict[str, PlacementPlan]:
    shortcuts: dict[str, str | int] = {"gpu": "none", "experts-ram": "all",
                                       "experts-ram-half": n_layer // 2}
    out = {}
    for name in names:
        plan = PlacementPlan(**{**base.__dict__, "experts_in_ram": shortcuts[name]})
        out[name] = plan
    return out


class BareLlama:
    """llama_cpp.Llama with the plan's placement, in this process (the engines run in their own
    processes; weights in RAM are shared through the page cache). It once ran in a spawned
    child, which hung twice on the H100 before reporting its load; in-process, a hang shows
    in the watchdog's stack dump (--watchdog)."""

    def __init__(self, model: str, plan: PlacementPlan, n_layer: int, arch: str,
                 verbose: bool = False) -> None:
        import llama_cpp.llama_cpp as llama_lib
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from app.engine import ggml_backend
        from app.engine.llama_params import FLASH_ATTN, model_params

        print("bare llama-cpp-python: loading...", flush=True)
        llama_cpp.llama_backend_init()
        kwargs = dict(model_path=model, n_gpu_layers=plan.n_gpu_layers, n_ctx=plan.n_ctx,
                      n_batch=plan.n_batch, n_ubatch=plan.n_ubatch, n_threads=plan.n_threads or None,
                      # Llama() would take every logical CPU for prompts; the engine takes n_threads
                      n_threads_batch=plan.n_threads_batch or plan.n_threads or None,
                      flash_attn_type=FLASH_ATTN[plan.flash_attn], verbose=verbose)
        self._params = model_params(plan, n_layer, arch, llama_cpp.llama_progress_callback(0))
        if not self._params.overrides:  # plain Llama(), as a user of llama-cpp-python writes it
            self.llm = llama_cpp.Llama(**kwargs)
        else:
            # Llama() has no tensor_buft_overrides argument in this version: hand it our params
            # through the function it calls for its defaults (looked up in llama_cpp.llama_cpp),
            # without a progress callback (a Python one segfaulted Llama()'s load on CUDA)
            original = llama_lib.llama_model_default_params
            llama_lib.llama_model_default_params = lambda: self._params.params  # type: ignore[assignment]
            try:
                self.llm = llama_cpp.Llama(**kwargs)
            finally:
                llama_lib.llama_model_default_params = original
        self.formatter = Jinja2ChatFormatter(
            template=self.llm.metadata.get("tokenizer.chat_template"), eos_token="", bos_token="")
        # where llama.cpp put layer 0's routed experts: proof that the placement took effect
        where = ggml_backend.tensor_buffer_type(self.llm.model, "blk.0.ffn_up_exps.weight")
        print(f"bare llama-cpp-python loaded; layer 0's routed experts in {where}", flush=True)

    def run(self, prompt: str, n_gen: int, capture: bool = False) -> Run:
        from app.engine import ggml_backend

        llm = self.llm
        # the patch's routing capture on or off (a no-op when asking for off on an unpatched build)
        if ggml_backend.routing_enable(llm.ctx, capture) != capture:
            raise SystemExit("routing capture needs MoE Desk's patched llama.cpp (--skip-capture)")
        llm.reset()  # the next eval drops the whole KV cache
        llama_cpp.llama_perf_context_reset(llm.ctx)
        # timed from the chat text, as the engine's time to first token is
        t0 = time.perf_counter()
        text = self.formatter(messages=[{"role": "user", "content": prompt}]).prompt
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        times = []
        for i, _tok in enumerate(llm.generate(tokens, temp=0.0, top_k=1, reset=True)):
            times.append(time.perf_counter())
            if i + 1 >= n_gen:
                break
        perf = llama_cpp.llama_perf_context(llm.ctx)
        return Run(len(tokens) / (times[0] - t0), (len(times) - 1) / (times[-1] - times[0]),
                   perf.n_p_eval / max(perf.t_p_eval_ms / 1000, 1e-9), 1000 * (times[0] - t0),
                   decode_inner_tps=perf.n_eval / max(perf.t_eval_ms / 1000, 1e-9))

    def close(self) -> None:
        self.llm.close()


class CapturingBare:
    """The bare Llama again, with routing capture on for its runs."""

    def __init__(self, bare: BareLlama) -> None:
        self.bare = bare

    def run(self, prompt: str, n_gen: int) -> Run:
        return self.bare.run(prompt, n_gen, capture=True)


class EngineRunner:
    """A MoE Desk engine process with the model loaded."""

    def __init__(self, model: str, plan: PlacementPlan, telemetry: bool) -> None:
        self.client = EngineClient.spawn()
        self.client.load(LoadParams(model=model, placement=plan, telemetry=telemetry))
        self.telemetry = telemetry

    def run(self, prompt: str, n_gen: int) -> Run:
        params = ChatParams(messages=[ChatMessage(role="user", content=prompt)],
                            sampling=Sampling(temperature=0.0, max_tokens=n_gen, ignore_eos=True))
        t0 = time.perf_counter()
        arrived: dict[int, float] = {}  # when each token's event came (one a token)
        stream = self.client.chat(params)
        for token in stream:
            arrived.setdefault(token.n, time.perf_counter())
        result = stream.result
        first, last = arrived[1], arrived[result.completion_tokens]
        return Run(result.prompt_tokens / (first - t0),
                   (result.completion_tokens - 1) / (last - first), result.prefill_tps,
                   1000 * (first - t0), 1000 * result.ttft_s, 1000 * result.queued_s,
                   result.decode_tps)

    def round_trips_ms(self, prompt: str, n_gen: int, pings: int = 20) -> tuple[float, float, float]:
        """Median round trip of a request the event loop answers at once (cancelling an id
        that does not exist), idle, then while a chat decodes; and the largest of the latter.
        Each crosses the socket both ways and wakes the engine's loop and this client's reader,
        as a token does."""
        def ping() -> float:
            t = time.perf_counter()
            self.client.cancel(10**9)
            return 1000 * (time.perf_counter() - t)

        idle = [ping() for _ in range(pings)]
        stream = self.client.chat(ChatParams(
            messages=[ChatMessage(role="user", content=prompt)],
            sampling=Sampling(temperature=0.0, max_tokens=4 * n_gen, ignore_eos=True)))
        tokens = iter(stream)
        next(tokens)  # decoding from here (longer than the pings take; cancelled after them)
        busy = []
        for _ in range(pings):
            busy.append(ping())
            time.sleep(0.005)
        stream.cancel()
        for _token in tokens:
            pass
        return statistics.median(idle), statistics.median(busy), max(busy)

    def close(self) -> float | None:
        hit = self.client.routing().hit_rate if self.telemetry else None
        self.client.shutdown()
        self.client.close()
        return hit


def measure(model: str, plan: PlacementPlan, n_layer: int, arch: str, prompt: str, n_gen: int,
            repeats: int, bare: bool, bare_verbose: bool = False, gap: float = 0.5,
            capture: bool = True, control: bool = False) -> dict[str, object]:
    """All variants loaded side by side (weights in RAM are shared through the page cache),
    runs interleaved so that drift in clocks and memory bandwidth hits each alike."""
    runners: dict[str, BareLlama | CapturingBare | EngineRunner] = {}
    rearm_watchdog()
    if bare:
        runners["bare"] = BareLlama(model, plan, n_layer, arch, verbose=bare_verbose)
        if capture:
            runners["bare_cap"] = CapturingBare(runners["bare"])
    rearm_watchdog()
    runners["engine"] = EngineRunner(model, plan, telemetry=False)
    rearm_watchdog()
    runners["tele"] = EngineRunner(model, plan, telemetry=True)
    if control:
        rearm_watchdog()
        runners["engine2"] = EngineRunner(model, plan, telemetry=False)
    runs: dict[str, list[Run]] = {name: [] for name in runners}
    names = list(runners)
    for i in range(repeats + 1):
        # each round in another order, and a pause before each run: the previous runner's
        # ggml threads spin for a while after its last token, and whoever runs next pays
        for name in names[i % len(names):] + names[:i % len(names)]:
            time.sleep(gap)
            rearm_watchdog()
            # a different first word each run, so no prompt prefix is reused from the cache
            run = runners[name].run(f"{i} {prompt}", n_gen)
            if i > 0:  # the first round warms up
                runs[name].append(run)
    rearm_watchdog()
    row: dict[str, object] = {}
    engine = runners["engine"]
    assert isinstance(engine, EngineRunner)
    row["rtt_idle"], row["rtt_busy"], row["rtt_busy_max"] = engine.round_trips_ms(prompt, n_gen)
    for runner in runners.values():
        if isinstance(runner, CapturingBare):
            continue
        if isinstance(runner, EngineRunner):
            hit = runner.close()
            if runner.telemetry:
                row["hit"] = hit
        else:
            runner.close()
    runners.clear()
    gc.collect()
    for label in ("bare", "bare_cap", "engine", "tele", "engine2"):
        row[f"{label}_pp"] = median(runs[label], "prefill_tps") if runs.get(label) else float("nan")
        row[f"{label}_tg"] = median(runs[label], "decode_tps") if runs.get(label) else float("nan")
        # the rounds' scatter, so that a difference of medians can be read against it
        tgs = [r.decode_tps for r in runs.get(label, [])]
        row[f"{label}_tg_range"] = f"{min(tgs):.1f}-{max(tgs):.1f}" if tgs else "-"
        for key, attr in (("pp_in", "prefill_inner_tps"), ("tg_in", "decode_inner_tps"),
                          ("ttft", "ttft_ms"),
                          ("ttft_in", "ttft_inner_ms"), ("queued", "queued_ms")):
            row[f"{label}_{key}"] = median(runs[label], attr) if runs.get(label) else float("nan")
    return row


def median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def print_pair_table(rows: list[dict[str, object]], heading: str, base: tuple[str, str],
                     other: tuple[str, str], effect: str) -> None:
    """Prefill and decode of two runners side by side, and how much slower ``other`` is.
    ``base`` and ``other`` are (row key prefix, column name)."""
    (b, b_name), (o, o_name) = base, other
    print(f"\n{heading}\n")
    print(f"| placement | {b_name} pp t/s | {o_name} pp t/s | {effect} (pp) | {b_name} tg t/s | "
          f"{o_name} tg t/s | {effect} (tg) | {b_name} tg rounds | {o_name} tg rounds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        bp, op, bt, ot = (float(r[k]) for k in (f"{b}_pp", f"{o}_pp", f"{b}_tg", f"{o}_tg"))  # type: ignore[arg-type]
        print(f"| {r['placement']} | {bp:.0f} | {op:.0f} | {1 - op / bp:+.1%} | {bt:.1f} | "
              f"{ot:.1f} | {1 - ot / bt:+.1%} | {r[f'{b}_tg_range']} | {r[f'{o}_tg_range']} |")


def print_decode_inside(rows: list[dict[str, object]], control: bool) -> None:
    """Decode t/s as each side times it: free of how this process's threads see the tokens
    arrive, and for bare with capture, of its Python loop (llama_decode alone)."""
    print("\ndecode as timed inside: bare = llama.cpp's eval timer (llama_decode alone), engine = "
          "its own (its loop and sampling included)\n")
    labels = [("bare", "bare"), ("bare_cap", "+capture"), ("engine", "engine"),
              ("tele", "engine+telemetry")] + ([("engine2", "engine2")] if control else [])
    print("| placement | " + " | ".join(f"{name} tg inside" for _, name in labels)
          + " | capture cost inside | telemetry cost inside |")
    print("|---|" + "---|" * (len(labels) + 2))
    for r in rows:
        speed = {key: float(r[f"{key}_tg_in"]) for key, _ in labels}  # type: ignore[arg-type]
        print(f"| {r['placement']} | " + " | ".join(f"{speed[k]:.1f}" for k, _ in labels)
              + f" | {1 - speed['bare_cap'] / speed['bare']:+.1%} | "
              f"{1 - speed['tele'] / speed['engine']:+.1%} |")


def main() -> int:
    faulthandler.enable()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--placement", action="append", choices=("gpu", "experts-ram",
                        "experts-ram-half"), help="repeatable (default: experts-ram)")
    parser.add_argument("--prompt-words", type=int, default=170,
                        help="words of prompt; 170 make about 490 tokens with the synthetic "
                        "tokenizer, one ubatch of 512")
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--control", action="store_true",
                        help="a second engine without telemetry: the spread between processes")
    parser.add_argument("--skip-capture", action="store_true",
                        help="no bare+capture runs (a llama.cpp without MoE Desk's patch)")
    parser.add_argument("--gap", type=float, default=0.5, metavar="SECONDS",
                        help="pause before each run (default 0.5)")
    parser.add_argument("--bare-verbose", action="store_true", help="llama.cpp's load log of bare")
    parser.add_argument("--watchdog", type=float, default=0, metavar="SECONDS",
                        help="dump every thread's stack and exit if one load or one run "
                        "takes longer")
    args = parser.parse_args()
    global _watchdog_s
    _watchdog_s = args.watchdog

    info = read_model(args.model)
    base = PlacementPlan(n_threads=args.threads, n_ctx=args.ctx, flash_attn="on")
    prompt = prompt_text(args.prompt_words)
    rows = []
    for name, plan in plans(args.placement or ["experts-ram"], info.n_layer, base).items():
        row = measure(args.model, plan, info.n_layer, info.architecture, prompt, args.gen,
                      args.repeats, bare=not args.skip_bare, bare_verbose=args.bare_verbose,
                      gap=args.gap, capture=not args.skip_capture, control=args.control)
        row["placement"] = name
        rows.append(row)
        print(row, flush=True)

    print(f"\nmodel {info.name} ({info.size_bytes / 1e9:.1f} GB), prompt ~{args.prompt_words} "
          f"tokens, {args.gen} generated, threads {args.threads or 'auto'}, median of "
          f"{args.repeats}\n")
    print("| placement | bare pp t/s | engine pp t/s | overhead (pp) | bare tg t/s | engine tg t/s "
          "| overhead (tg) | +telemetry tg t/s | telemetry cost (tg) | hit rate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        hit = "-" if r.get("hit") is None else f"{r['hit']:.0%}"
        print(f"| {r['placement']} | {r['bare_pp']:.0f} | {r['engine_pp']:.0f} | "
              f"{1 - r['engine_pp'] / r['bare_pp']:+.1%} | {r['bare_tg']:.1f} | {r['engine_tg']:.1f} | "
              f"{1 - r['engine_tg'] / r['bare_tg']:+.1%} | {r['tele_tg']:.1f} | "
              f"{1 - r['tele_tg'] / r['engine_tg']:+.1%} | {hit} |")
    print_pair_table(rows, "routing capture within one process (bare's Llama, the patch's capture "
                     "toggled between runs)", ("bare", "bare"), ("bare_cap", "+capture"), "cost")
    if args.control:
        print_pair_table(rows, "the same engine in two processes, telemetry off in both (engine2 "
                         "against engine)", ("engine", "engine"), ("engine2", "engine2"), "spread")
    print("\nprefill as timed inside: bare = llama.cpp's prompt eval timer, engine = admission to "
          "end of prefill\n")
    print("| placement | bare pp inside | engine pp inside | engine+telemetry pp inside | "
          "overhead inside (pp) | bare TTFT ms | engine TTFT ms | = queued | + own | + socket "
          "and threads |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        around = r['engine_ttft'] - r['engine_queued'] - r['engine_ttft_in']
        print(f"| {r['placement']} | {r['bare_pp_in']:.0f} | {r['engine_pp_in']:.0f} | "
              f"{r['tele_pp_in']:.0f} | {1 - r['engine_pp_in'] / r['bare_pp_in']:+.1%} | "
              f"{r['bare_ttft']:.1f} | {r['engine_ttft']:.1f} | {r['engine_queued']:.1f} | "
              f"{r['engine_ttft_in']:.1f} | {around:.1f} |")
    print_decode_inside(rows, args.control)
    print("\nround trip of a request the engine's event loop answers at once (ms)\n")
    print("| placement | idle | while decoding (median) | while decoding (max) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['placement']} | {r['rtt_idle']:.2f} | {r['rtt_busy']:.2f} | "
              f"{r['rtt_busy_max']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
