"""``python -m app.engine``: start the engine server on a local socket.

    python -m app.engine [--socket PATH | --tcp] [--child]

The secret token is read from the first line of stdin (never from the command line, where
other users could see it). When listening, the engine prints one JSON line on stdout,
``{"event": "ready", "address": "unix:/...", "pid": N, "protocol": 2}``, then serves until a
``shutdown`` request or SIGTERM. Logs go to stderr. ``EngineClient.spawn`` does all this.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

# llama.cpp's libraries before numpy's: the other way round, loading a model on the CUDA
# build segfaults (seen on the H100 with llama-cpp-python 0.3.36, numpy imported first)
import llama_cpp  # noqa: F401, I001

from app.engine.protocol import PROTOCOL_VERSION
from app.engine.transport import (
    HAS_UNIX_SOCKETS,
    SOCKET_NAME,
    address_of,
    listen_tcp,
    listen_unix,
)

if TYPE_CHECKING:
    from app.engine.server import EngineServer

log = logging.getLogger("moedesk.engine")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", type=Path, help="Unix socket path; its directory must be "
                       "ours and 0700, or not exist yet (default: a new private temp directory)")
    where.add_argument("--tcp", action="store_true", help="listen on 127.0.0.1 (a free port)")
    parser.add_argument("--child", action="store_true", help="spawned by a client: exit when "
                        "stdin closes (the client is gone), and leave Ctrl-C to the client")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser.parse_args(argv)


def watch_parent(on_gone: Callable[[], None]) -> None:
    """Call ``on_gone`` when stdin reaches EOF: the client that spawned us has closed it or died,
    and an engine nobody can reach must not keep gigabytes of model in memory."""
    stdin_fd = sys.stdin.fileno()

    def wait_for_eof() -> None:
        # the raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered
        # reader's lock makes the interpreter abort at exit
        try:
            while os.read(stdin_fd, 4096):
                pass
        except OSError:
            pass
        log.info("stdin closed: the client is gone")
        on_gone()

    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()


def serve(sock: socket.socket, token: str, child: bool) -> EngineServer:
    """Announce the address on stdout, then serve until shutdown."""
    from app.engine.runtime import Runtime  # llama.cpp takes a moment to load
    from app.engine.server import EngineServer

    server = EngineServer(Runtime(), token)
    ready = {"event": "ready", "address": str(address_of(sock)), "pid": os.getpid(),
             "protocol": PROTOCOL_VERSION}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    # Nobody reads stdout after the ready line: stray prints (C libraries) go to the log, and
    # can never fill a pipe and stall the engine.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if child:
        watch_parent(server.request_shutdown)
    server.serve(sock)
    return server


def main(argv: list[str] | None = None) -> int:
    # a crash inside llama.cpp then leaves the Python stack in the engine log
    faulthandler.enable()
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = sys.stdin.buffer.readline().strip().decode("utf-8", errors="replace")
    if not token:
        log.error("no token on stdin: the first line of stdin must be the engine's secret token")
        return 2
    if args.child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is for the client

    socket_path: Path | None = None
    made_dir: Path | None = None
    if args.tcp or not HAS_UNIX_SOCKETS:
        sock = listen_tcp()
    else:
        if args.socket is None:
            made_dir = Path(tempfile.mkdtemp(prefix="moedesk-"))  # created 0700
            socket_path = made_dir / SOCKET_NAME
        else:
            socket_path = args.socket.absolute()
        try:
            sock = listen_unix(socket_path)
        except OSError as exc:
            log.error("cannot listen on %s: %s", socket_path, exc)
            return 2

    try:
        server = serve(sock, token, child=args.child)
    finally:  # also when starting failed: no stale socket file is left behind
        sock.close()
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)
        if made_dir is not None:
            with contextlib.suppress(OSError):
                made_dir.rmdir()
    log.info("engine stopped")
    if server.job_stuck:  # a thread is still inside llama.cpp: do not wait for it at exit
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
