"""``moedesk-cli serve MODEL``: load a model in a new engine and serve it over OpenAI's API.

    moedesk-cli serve Qwen3-30B-A3B-Q4_K_M.gguf --port 8000 --experts-in-ram all --parallel 4

Prints one line on stdout once it serves: ``serving MODEL_ID at http://HOST:PORT/v1``
(``--port 0`` picks a free port: read it there). Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from typing import Any

from app.cli_load import ProgressBar, add_placement_args, load_params_from_args, positive_int
from app.serve.http import DEFAULT_HOST, DEFAULT_PORT, OpenAIServer

API_KEY_ENV = "MOEDESK_API_KEY"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_subcommand(subparsers: Any) -> None:
    """Register ``serve`` on moedesk-cli's subparsers."""

    serve = subparsers.add_parser(
        "serve", help="serve a GGUF model over an OpenAI-compatible HTTP API",
        description="Load MODEL in a new engine and serve it at http://HOST:PORT/v1 "
        "(/v1/models, /v1/chat/completions, /v1/completions).")
    serve.add_argument("model", help="a .gguf file (or any shard), or a model in the library "
                                     "(owner/repo:QUANT, or an import's name)")
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help="address to listen on (default: %(default)s, this machine only; "
                       "0.0.0.0 opens it to the network: set an API key)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help="TCP port (default: %(default)s; 0: a free one, printed)")
    serve.add_argument("--api-key", default=None,
                       help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, "
                       "which other users cannot read from the process list)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests whose Host header is NAME (repeatable); by "
                       "default only the address it listens on (and localhost on 127.0.0.1) is "
                       "accepted, so a web page cannot reach the server through DNS rebinding")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="let web pages from ORIGIN (https://app.example, or '*' for any) "
                       "call the server from a browser (CORS; repeatable); pages on this "
                       "machine (http://localhost:PORT) may by default, others may not")
    serve.add_argument("--context-policy", default="stop",
                       choices=["stop", "drop_middle", "rolling_window"],
                       help="a conversation longer than the context, when the request sends "
                            "no \"context_policy\": stop (a 400, the default), drop_middle "
                            "(leave out the oldest turns but the first) or rolling_window "
                            "(leave out the oldest turns); system messages and the latest turn "
                            "are always kept")
    serve.add_argument("--parallel", type=positive_int, default=1, metavar="N",
                       help="requests generated at once, each with --ctx tokens of context "
                       "(the KV cache grows N times); more wait their turn (default: 1)")
    add_placement_args(serve)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from app.engine.client import EngineClient
    from app.engine.protocol import ContextPolicy

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if args.host not in LOOPBACK and api_key is None:
        print(f"warning: serving on {args.host} without an API key: anyone who can reach this "
              f"machine can use the model. Set {API_KEY_ENV} or --api-key.", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    params, placement_line = load_params_from_args(args, args.model)
    params.placement = dataclasses.replace(params.placement, n_parallel=args.parallel)
    print(placement_line, file=sys.stderr)
    with EngineClient.spawn() as engine:
        loaded = engine.load(params, on_progress=ProgressBar())
        print(file=sys.stderr)
        server = OpenAIServer(engine, host=args.host, port=args.port, api_key=api_key,
                              allowed_hosts=args.allow_host, allowed_origins=args.allow_origin,
                              context_policy=ContextPolicy(args.context_policy))
        try:
            server.start()
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}). "
                  "Choose another --port, or stop what uses this one.", file=sys.stderr)
            return 1
        try:
            print(f"serving {loaded.model.name} at {server.url}", flush=True)
            parallel = (f" for each of {loaded.n_parallel} requests at once"
                        if loaded.n_parallel > 1 else "")
            print(f"{loaded.model.architecture}, context {loaded.n_ctx}{parallel}, loaded in "
                  f"{loaded.load_seconds:.1f} s; Ctrl-C stops.", file=sys.stderr)
            if loaded.expert_cache is not None:
                print(loaded.expert_cache.describe(), file=sys.stderr)
            # wake now and then to notice an engine that died under us
            while not stop.wait(1.0):
                if engine.process is not None and engine.process.popen.poll() is not None:
                    print(f"error: {engine.process.died_error(expected=False)}",
                          file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0
