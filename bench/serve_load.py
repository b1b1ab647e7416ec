"""Load on the OpenAI-compatible server: throughput and latency at 1, 2, 4, 8 concurrent streams.

Each level runs C clients at once, each sending --per-client streamed chat requests one after
another (closed loop), every answer exactly --max-tokens long (``ignore_eos``). Per level it
prints the aggregate output t/s (all completion tokens / wall time), the median decode t/s
one client sees (tokens after the first / time after the first), time to first token and
total latency (median, p90, max). With ``--parallel 1`` the engine generates one chat at a
time and gives turns round-robin, so aggregate t/s stays near the single-stream figure while
TTFT grows with the queue; with ``--parallel N`` it decodes up to N streams in one batch, so
aggregate t/s should grow with the streams up to N. Plain http.client (no SDK in the
timings). Run by hand, e.g.:

    python -m app.synthetic /tmp/q30.gguf --preset qwen3-30b-a3b
    python bench/serve_load.py --model /tmp/q30.gguf --experts-in-ram all --threads 16
    python bench/serve_load.py --model /tmp/q30.gguf --experts-in-ram all --parallel 4
    python bench/serve_load.py --url http://127.0.0.1:8000/v1   # a server already running

With --model it starts ``moedesk-cli serve MODEL --port 0`` (placement options and
--parallel passed on; --ctx is per stream).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

WORDS = ("expert", "router", "layer", "token", "memory", "cache", "offload", "decode")


@dataclass
class Sample:
    ttft_s: float
    total_s: float
    completion_tokens: int


@dataclass
class Level:
    concurrency: int
    requests: int
    wall_s: float
    aggregate_tps: float
    stream_decode_tps: float  # median over requests
    ttft_p50: float
    ttft_p90: float
    ttft_max: float
    total_p50: float
    total_p90: float
    total_max: float


def prompt(i: int, n_words: int) -> str:
    return f"Request {i}. Summarise: " + " ".join(WORDS[(i + k * 3) % len(WORDS)]
                                                  for k in range(n_words))


def stream_once(url: str, model: str, text: str, max_tokens: int, api_key: str | None) -> Sample:
    """One streamed chat request; times taken where the client sees the bytes."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=3600)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                       "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                       "stream": True, "stream_options": {"include_usage": True}})
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    t0 = time.perf_counter()
    ttft = 0.0
    tokens = 0
    try:
        conn.request("POST", parts.path + "/chat/completions", body, headers)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.read()[:500]!r}")
        for raw in response:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"stream error: {event['error']}")
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if not ttft and any(c["delta"].get("content") for c in event["choices"]):
                ttft = time.perf_counter() - t0
    finally:
        conn.close()
    return Sample(ttft_s=ttft, total_s=time.perf_counter() - t0, completion_tokens=tokens)


def run_level(url: str, model: str, concurrency: int, per_client: int, max_tokens: int,
              n_words: int, api_key: str | None) -> Level:
    samples: list[Sample] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(per_client):
            try:
                sample = stream_once(url, model, prompt(c * per_client + r, n_words),
                                     max_tokens, api_key)
            except BaseException as exc:  # reported below
                with lock:
                    errors.append(exc)
                return
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed at concurrency {concurrency}: "
                           f"{errors[0]}")
    ttfts = sorted(s.ttft_s for s in samples)
    totals = sorted(s.total_s for s in samples)
    decode = [(s.completion_tokens - 1) / (s.total_s - s.ttft_s) for s in samples
              if s.completion_tokens > 1 and s.total_s > s.ttft_s]
    return Level(
        concurrency=concurrency, requests=len(samples), wall_s=wall,
        aggregate_tps=sum(s.completion_tokens for s in samples) / wall,
        stream_decode_tps=statistics.median(decode) if decode else 0.0,
        ttft_p50=statistics.median(ttfts), ttft_p90=quantile(ttfts, 0.9), ttft_max=ttfts[-1],
        total_p50=statistics.median(totals), total_p90=quantile(totals, 0.9),
        total_max=totals[-1])


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    """``moedesk-cli serve MODEL --port 0``; returns it and its base URL."""
    command = [sys.executable, "-m", "app.cli", "serve", args.model, "--port", "0",
               "--ctx", str(args.ctx), "--threads", str(args.threads),
               "--experts-in-ram", args.experts_in_ram, "--gpu-layers", str(args.gpu_layers),
               "--parallel", str(args.parallel)]
    root = str(Path(__file__).resolve().parents[1])  # the repo, before any site dir set
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert server.stdout is not None
    line = server.stdout.readline()  # "serving MODEL_ID at URL", once it serves
    if not line.startswith("serving "):
        server.wait()
        raise SystemExit(f"moedesk-cli serve did not start (exit {server.returncode})")
    return server, line.split()[-1]


def model_id(url: str, api_key: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    conn.request("GET", parts.path + "/models", headers=headers)
    data = json.loads(conn.getresponse().read())
    conn.close()
    if not data.get("data"):
        raise SystemExit(f"the server at {url} has no model loaded: {data}")
    return str(data["data"][0]["id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="a .gguf: start moedesk-cli serve with it")
    target.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default=os.environ.get("MOEDESK_API_KEY"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--per-client", type=int, default=2, help="requests per client per level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt-words", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results here")
    group = parser.add_argument_group("placement (with --model)")
    group.add_argument("--experts-in-ram", default="all")
    group.add_argument("--gpu-layers", type=int, default=-1)
    group.add_argument("--ctx", type=int, default=8192, help="context per stream")
    group.add_argument("--parallel", type=int, default=1,
                       help="streams the engine decodes at once (moedesk-cli serve --parallel)")
    group.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    server = None
    url = args.url
    if args.model:
        server, url = start_server(args)
    try:
        model = model_id(url, args.api_key)
        print(f"model {model} at {url}; {args.max_tokens} tokens per answer, "
              f"{args.per_client} requests per client"
              + (f", --parallel {args.parallel}" if args.model else ""), file=sys.stderr)
        stream_once(url, model, prompt(-1, args.prompt_words), 8, args.api_key)  # warm-up
        levels = []
        print(f"{'streams':>7} {'reqs':>5} {'wall s':>7} {'agg t/s':>8} {'stream t/s':>10} "
              f"{'TTFT p50':>9} {'p90':>7} {'max':>7} {'total p50':>10} {'p90':>7} {'max':>7}")
        for c in args.concurrency:
            lv = run_level(url, model, c, args.per_client, args.max_tokens, args.prompt_words,
                           args.api_key)
            levels.append(lv)
            print(f"{lv.concurrency:7d} {lv.requests:5d} {lv.wall_s:7.2f} {lv.aggregate_tps:8.1f} "
                  f"{lv.stream_decode_tps:10.1f} {lv.ttft_p50:9.3f} {lv.ttft_p90:7.3f} "
                  f"{lv.ttft_max:7.3f} {lv.total_p50:10.3f} {lv.total_p90:7.3f} "
                  f"{lv.total_max:7.3f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps([asdict(lv) for lv in levels], indent=2))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
