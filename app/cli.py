"""Headless commands: try the engine without the GUI.

    moedesk-cli hardware                   CPU, RAM, NUMA, GPUs, free disk, host-to-GPU copies
    moedesk-cli advise MODEL|URL|REPO      will it fit, and how to split it between GPU and RAM
    moedesk-cli download REPO --quant Q    all shards of one quant, resumable, sha256-checked
    moedesk-cli info                       what this build of llama.cpp can use
    moedesk-cli chat --model FILE.gguf     chat in the terminal (experts in RAM by default)
    moedesk-cli synth OUT.gguf --preset tiny   write a synthetic MoE model
    moedesk-cli library [list|import PATH|import-hf-cache|delete NAME]   models on this machine
    moedesk-cli login / logout             keep a Hub token in the system keyring
    moedesk-cli tune / bench MODEL         measured placements: the fastest kept, or a report
    moedesk-cli probe-cpu                  time llama.cpp's CPU kernels for the advisor (once)
    moedesk-cli serve --model FILE.gguf    an OpenAI-compatible server
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app import crash_log
from app.cli_load import ProgressBar, add_placement_args, load_params_from_args, positive_int
from app.engine.protocol import ChatMessage, ChatParams, Sampling
from app.errors import EngineError
from app.hub import cli as hub_cli
from app.hub.errors import HubError
from app.hub.library import LibraryError
from app.hub.token import get_token
from app.paths import default_models_dir
from app.serve import cli as serve_cli
from app.store import StoreError
from app.tune import cli as tune_cli

EXIT_UNEXPECTED = 70  # sysexits.h's EX_SOFTWARE: an internal error, reported with its log


def cmd_hardware(args: argparse.Namespace) -> int:
    from app import hardware
    from app.hardware.expert_read import cached_expert_read
    from app.hardware.h2d import ProbeState, host_copy_probe

    for line in hardware.detect(models_dir=args.models_dir).summary():
        print(line)
    copies = host_copy_probe()  # with an NVIDIA GPU: measured once (about a second), then cached
    if copies.state is not ProbeState.NO_GPU:
        print(copies.describe())
    kernels = cached_expert_read()
    print(kernels.describe() if kernels else "CPU kernels not timed here: 'moedesk-cli probe-cpu' "
          "times them (about half a minute), and the advisor then predicts decode with experts in "
          "RAM beside a GPU from them")
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    from app import hardware
    from app.advisor import report
    from app.advisor.planner import plan_for
    from app.hardware.bandwidth import ram_bandwidth

    target: str = args.model
    token = get_token()  # HF_TOKEN, else the keyring (moedesk-cli login)
    looks_local = os.path.exists(target) or target.endswith(".gguf")
    if looks_local or target.startswith(("http://", "https://")):
        model = report.load_model_header(target, token)  # a refused file fails before detection
        machine, build, ram = hardware.detect(), report.build_info(), ram_bandwidth()
        lines = report.plan_lines(model, plan_for(model, machine, args.ctx, build=build, ram=ram))
    else:  # a Hub repo id, e.g. unsloth/Qwen3-30B-A3B-GGUF
        machine, build, ram = hardware.detect(), report.build_info(), ram_bandwidth()
        lines = report.repo_lines(target, report.advise_repo(target, machine, args.ctx, token,
                                                                 build=build, ram=ram))
    print("\n".join(lines))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    import threading

    from app.hub.download import DownloadProgress, download_quant
    from app.hub.repo import list_gguf_quants

    token = get_token()  # HF_TOKEN, else the keyring (moedesk-cli login)
    quants = list_gguf_quants(args.repo, token=token)
    chosen = next((q for q in quants if q.name.lower() == args.quant.lower()), None)
    if chosen is None:
        names = ", ".join(f"{q.name} ({q.total_size / 1e9:.1f} GB)" for q in quants) or "none"
        print(f"error: {args.repo} has no quant {args.quant!r}. It has: {names}", file=sys.stderr)
        return 2

    def show(p: DownloadProgress) -> None:
        eta = f", {p.eta_s / 60:.0f} min left" if p.eta_s else ""
        end = "" if sys.stderr.isatty() else "\n"
        print(f"\r{chosen.name}: {p.done / 1e9:.2f} of {p.total / 1e9:.2f} GB, "
              f"{p.bytes_per_s / 1e6:.1f} MB/s{eta}   ", end=end, file=sys.stderr, flush=True)

    cancel = threading.Event()
    try:
        paths = download_quant(args.repo, chosen, args.dir, token=token, on_progress=show,
                               cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        print("\ncancelled; run the same command again to resume.", file=sys.stderr)
        return 130
    print(file=sys.stderr)
    print(paths[0])  # the file to load: llama.cpp finds the other shards beside it
    return 0


def cmd_info(_args: argparse.Namespace) -> int:
    from app.engine.client import EngineClient

    with EngineClient.spawn() as engine:
        info = engine.info()
    print(f"llama-cpp-python {info.llama_cpp_python}; backends: {', '.join(info.backends)}")
    print(f"MoE Desk routing patch: {'yes' if info.routing_patch else 'NO (telemetry off)'}")
    for dev in info.devices:
        print(f"  {dev.name:10} {dev.kind:5} {dev.memory_total / 2**30:7.1f} GiB  {dev.description}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from app.engine.client import EngineClient

    params, placement_line = load_params_from_args(args, args.model)
    print(placement_line, file=sys.stderr)
    with EngineClient.spawn() as engine:
        loaded = engine.load(params, on_progress=ProgressBar())
        if sys.stderr.isatty():
            print(file=sys.stderr)
        model = loaded.model
        print(f"{model.name}: {model.architecture}, {model.n_layer} layers, {model.n_expert} "
              f"experts ({model.n_expert_used} active), context {loaded.n_ctx}, loaded in "
              f"{loaded.load_seconds:.1f} s", file=sys.stderr)
        for p in loaded.placement:
            print(f"  {p.tensor_class:15} {p.device:8} {p.bytes / 2**20:10.1f} MiB", file=sys.stderr)
        for feature in (loaded.expert_cache, loaded.expert_stream):
            if feature is not None:
                print(f"  {feature.describe()}", file=sys.stderr)
        print("Type a message; an empty line or Ctrl-D quits, Ctrl-C stops an answer.",
              file=sys.stderr)
        history: list[ChatMessage] = []
        if args.system:
            history.append(ChatMessage(role="system", content=args.system))
        sampling = Sampling(temperature=args.temp, max_tokens=args.max_tokens, seed=args.seed)
        while True:
            try:
                line = input("> " if sys.stdin.isatty() else "")
            except EOFError:
                break
            if not line.strip():
                break
            history.append(ChatMessage(role="user", content=line))
            stream = engine.chat(ChatParams(messages=list(history), sampling=sampling))
            try:
                for text in stream.texts():
                    print(text, end="", flush=True)
            except KeyboardInterrupt:
                stream.cancel()
                for _ in stream:
                    pass
            result = stream.result
            print()
            print(f"[{result.completion_tokens} tokens, prefill {result.prefill_tps:.1f} t/s, "
                  f"decode {result.decode_tps:.1f} t/s, first token {result.first_token_s:.2f} s, "
                  f"{result.finish_reason}]", file=sys.stderr)
            history.append(ChatMessage(role="assistant", content=result.text))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from app import synthetic

    return synthetic.main(args.synth_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moedesk-cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    hw = sub.add_parser("hardware", help="what this machine has (no engine needed)")
    hw.add_argument("--models-dir", type=Path, default=Path.home(),
                    help="folder whose free disk space to report (default: home)")
    advise = sub.add_parser("advise", help="plan a model for this machine: a .gguf file, a URL, "
                            "or a Hub repo id (reads headers only)")
    advise.add_argument("model", help="path, http(s) URL of a .gguf, or owner/repo on the Hub")
    advise.add_argument("--ctx", type=positive_int, default=8192,
                        help="context size to plan for")
    download = sub.add_parser("download", help="download a quant of a Hub GGUF repo (HF_TOKEN for "
                              "gated repos)")
    download.add_argument("repo", help="owner/repo, e.g. unsloth/Qwen3-30B-A3B-GGUF")
    download.add_argument("--quant", required=True, help="e.g. Q4_K_M (see 'advise REPO')")
    download.add_argument("--dir", type=Path, default=default_models_dir(),
                          help="models folder (default: %(default)s)")
    sub.add_parser("info", help="backends and devices of the installed engine")
    chat = sub.add_parser("chat", help="chat with a GGUF model in the terminal")
    chat.add_argument("--model", required=True,
                      help="a .gguf file (or any shard), or a model in the library: owner/repo:QUANT "
                           "for a download, the name 'moedesk-cli library' lists for an import")
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--temp", type=float, default=0.7)
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--seed", type=int, default=None)
    add_placement_args(chat)
    synth = sub.add_parser("synth", help="write a synthetic MoE GGUF (see synth --help)",
                           add_help=False)
    synth.add_argument("synth_args", nargs=argparse.REMAINDER)
    tune_cli.add_subcommand(sub)
    hub_cli.add_subcommand(sub)  # library, login, logout
    serve_cli.add_subcommand(sub)  # OpenAI-compatible server
    args = parser.parse_args(argv)
    commands = {"hardware": cmd_hardware, "advise": cmd_advise, "download": cmd_download,
                "info": cmd_info, "chat": cmd_chat, "synth": cmd_synth}
    try:
        # subcommands defined in their own modules set func
        return (getattr(args, "func", None) or commands[args.command])(args)
    except (EngineError, HubError, LibraryError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the top-level guard: one line here, the traceback in the log
        print(f"error: {crash_log.describe(exc, 'moedesk-cli')}", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    raise SystemExit(main())
