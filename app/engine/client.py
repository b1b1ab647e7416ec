"""The Qt-free client of the engine process; the GUI, the CLI and the tests all use it.

    with EngineClient.spawn() as engine:
        engine.load(LoadParams(model="model.gguf"))
        stream = engine.chat(ChatParams(messages=[ChatMessage("user", "Hello")]))
        for token in stream:
            print(token.text, end="")
        print(stream.result.decode_tps)

Calls block the calling thread (the GUI calls them from a worker thread). One reader thread
per client takes every event off the socket and hands it to the call waiting for that request
id, so several threads may use one client at once. Failures come back as the exception classes
of ``app.engine.errors``; if the engine process ends, every waiting and later call raises
EngineDiedError saying how it ended and quoting the end of its log.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from app.engine.errors import EngineDiedError, EngineError, ProtocolError, error_from_wire
from app.engine.protocol import (
    BuildInfo,
    CancelParams,
    ChatParams,
    ChatResult,
    EngineStats,
    Hello,
    LoadParams,
    LoadResult,
    Progress,
    RoutingSnapshot,
    SubscribeParams,
    Token,
    from_wire,
    request,
)
from app.engine.transport import (
    HAS_UNIX_SOCKETS,
    SOCKET_NAME,
    Address,
    connect,
    new_token,
    recv_message,
    send_message,
)

log = logging.getLogger("moedesk.client")

Message = dict[str, Any]
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# The folder holding the ``app`` package: the engine is started as ``-m app.engine`` from it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 20


class EngineProcess:
    """An engine process a client started: its pipes, its log, and how it ended."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, log_start: int,
                 run_dir: Path) -> None:
        self.popen = popen
        self.log_path = log_path
        self._log_start = log_start  # where this run begins in a log file that is appended to
        self._run_dir = run_dir  # private temp folder: the socket, and the log if not given

    @classmethod
    def start(cls, *, log_path: str | Path | None = None, ready_timeout: float = 120.0,
              tcp: bool = False, env: Mapping[str, str] | None = None,
              ) -> tuple[EngineProcess, Address, str]:
        """Start ``python -m app.engine``, hand it a fresh token on stdin, wait for "ready"."""
        run_dir = Path(tempfile.mkdtemp(prefix="moedesk-"))  # 0700, ours alone
        log_file = Path(log_path) if log_path is not None else run_dir / "engine.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "app.engine", "--child"]
        if tcp or not HAS_UNIX_SOCKETS:
            command.append("--tcp")
        else:
            command += ["--socket", str(run_dir / SOCKET_NAME)]
        environ = {**os.environ, **(env or {})}
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), environ.get("PYTHONPATH", "")) if p)
        token = new_token()
        with open(log_file, "ab") as log_out:
            log_start = log_out.tell()
            # the caller's working directory stays: relative model paths mean the same there
            popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log_out, env=environ)
        process = cls(popen, log_file, log_start, run_dir)
        try:
            assert popen.stdin is not None
            # the token travels on a pipe, never on the command line where others can read it;
            # stdin stays open: the engine exits when it closes, i.e. when we are gone
            popen.stdin.write(token.encode() + b"\n")
            popen.stdin.flush()
            address = process._wait_ready(ready_timeout)
        except BaseException:
            process.stop(timeout=5.0)
            process.cleanup()
            raise
        return process, address, token

    def _wait_ready(self, timeout: float) -> Address:
        """The address from the engine's ready line (read on a helper thread: a pipe read
        has no timeout of its own)."""
        assert self.popen.stdout is not None
        stdout: IO[bytes] = self.popen.stdout
        found: queue.Queue[Address | None] = queue.Queue()

        def read_ready() -> None:
            for line in iter(stdout.readline, b""):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    ready = json.loads(line)
                    if ready["event"] == "ready":
                        found.put(Address.parse(ready["address"]))
                        return
            found.put(None)  # stdout closed: the engine ended before it was ready

        threading.Thread(target=read_ready, name="engine-ready", daemon=True).start()
        try:
            address = found.get(timeout=timeout)
        except queue.Empty:
            raise EngineDiedError(f"the engine did not start within {timeout:.0f} s.",
                                  self._log_hint("Its log")) from None
        if address is None:
            raise self.died_error(starting=True)
        stdout.close()
        return address

    def wait(self, timeout: float | None) -> int | None:
        """The exit status once the process has ended (within ``timeout``), else None."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """End the process: closing stdin asks it to exit; SIGTERM, then SIGKILL, insist."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        if self.wait(timeout) is None:
            self.popen.terminate()
            if self.wait(5.0) is None:
                self.popen.kill()
                self.popen.wait()

    def cleanup(self) -> None:
        """Remove the private run folder (the socket, and a log nobody asked to keep)."""
        for path in self._run_dir.iterdir() if self._run_dir.exists() else ():
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self._run_dir.rmdir()

    def log_tail(self, max_lines: int = LOG_TAIL_LINES) -> str:
        """The last lines this run wrote to its log."""
        try:
            with open(self.log_path, "rb") as log_in:
                size = log_in.seek(0, os.SEEK_END)
                log_in.seek(max(self._log_start, size - 16384))
                text = log_in.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-max_lines:])

    def _log_hint(self, prefix: str) -> str:
        tail = self.log_tail()
        if not tail:
            return f"{prefix} ({self.log_path}) is empty."
        return f"{prefix} ({self.log_path}) ends with:\n{tail}"

    def died_error(self, expected: bool = False, starting: bool = False,
                   wait_s: float = 10.0) -> EngineDiedError:
        """An EngineDiedError saying how the process ended (waiting briefly for it to end:
        its socket can close a moment before its exit status is ready)."""
        code = self.wait(wait_s)
        if expected and code == 0:
            return EngineDiedError("the engine has shut down.")
        if code is None:
            how = "closed the connection but is still running"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown signal"
            how = f"was killed by signal {-code} ({name})"
        else:
            how = f"exited with code {code}"
        when = "while starting" if starting else "unexpectedly"
        hint = self._log_hint("Its log")
        if code == -getattr(signal, "SIGKILL", 9):
            hint = ("A SIGKILL nobody sent is usually the system running out of memory: try a "
                    "placement with more experts in RAM, a smaller context or quant. " + hint)
        error = EngineDiedError(f"the engine process {how} {when}.", hint)
        error.returncode = code  # type: ignore[attr-defined]
        error.log_tail = self.log_tail()  # type: ignore[attr-defined]
        return error


class _Call:
    """A request in flight: its events arrive on ``events``; an EngineError ends it."""

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.events: queue.Queue[Message | EngineError] = queue.Queue()


def _copy(error: EngineError) -> EngineError:
    """A fresh instance to raise (one exception object raised in several threads would
    collect their tracebacks into one)."""
    fresh = type(error)(error.message, error.hint)
    fresh.__dict__.update({k: v for k, v in error.__dict__.items() if k not in ("message", "hint")})
    return fresh


class RequestStream(Generic[ItemT, ResultT]):
    """The events of one running job as they arrive, then its result.

    Iterate it for the streamed items; the loop ends when the job has. ``result`` waits for
    the end (reading any items not yet iterated) and returns the result, or raises the
    request's error. ``cancel()`` asks the engine to stop the job.
    """

    item_event = ""
    item_type: type[ItemT]
    result_type: type[ResultT]

    def __init__(self, client: EngineClient, call: _Call) -> None:
        self.request_id = call.request_id
        self._client = client
        self._call = call
        self._result: ResultT | None = None
        self._error: EngineError | None = None

    def __iter__(self) -> Iterator[ItemT]:
        while self._result is None and self._error is None:
            message = self._client._next_event(self._call)
            if isinstance(message, EngineError):
                self._error = message
            elif message["event"] == self.item_event:
                yield from_wire(self.item_type, message["data"], "data")
            elif message["event"] == "done":
                self._result = from_wire(self.result_type, message["data"], "data")
            elif message["event"] == "error":
                self._error = error_from_wire(message["data"])
        if self._error is not None:
            raise _copy(self._error)

    @property
    def result(self) -> ResultT:
        for _item in self:
            pass
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Ask the engine to stop this job; returns at once (safe from any thread)."""
        if self._result is None and self._error is None:
            self._client._send_and_forget("cancel", CancelParams(request=self.request_id))


class ChatStream(RequestStream[Token, ChatResult]):
    """A chat's tokens as they are generated. After ``cancel()`` it ends normally, with
    ``result.finish_reason == "cancelled"`` and the text generated so far."""

    item_event = "token"
    item_type = Token
    result_type = ChatResult


class LoadStream(RequestStream[Progress, LoadResult]):
    """A load's progress. After ``cancel()``, ``result`` raises an EngineError."""

    item_event = "progress"
    item_type = Progress
    result_type = LoadResult


class EngineClient:
    """A connection to an engine process (and, for ``spawn``, ownership of that process)."""

    def __init__(self, address: Address, token: str, *, process: EngineProcess | None = None,
                 timeout: float = 10.0, client_name: str = "moedesk") -> None:
        """Connect to the engine at ``address`` and authenticate; ``connect`` and ``spawn``
        are the usual ways in."""
        self.address = address
        self.process = process
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Call | None] = {}  # None: a reply nobody waits for
        self._died: EngineError | None = None
        self._closing = False
        self._shut_down = False
        self._on_stats: Callable[[EngineStats], None] | None = None
        self._on_routing: Callable[[RoutingSnapshot], None] | None = None
        self._sock = connect(address, timeout)
        self._stream = self._sock.makefile("rb")
        self._reader = threading.Thread(target=self._read_loop, name="engine-client-reader",
                                        daemon=True)
        self._reader.start()
        try:
            hello = self._wait(self._start("hello", Hello(token=token, client=client_name)))
        except BaseException:
            self.close()
            raise
        self.pid: int = int(hello.get("pid", 0))

    @classmethod
    def connect(cls, address: str | Address, token: str, timeout: float = 10.0) -> EngineClient:
        """Connect to an engine that is already running."""
        if isinstance(address, str):
            address = Address.parse(address)
        return cls(address, token, timeout=timeout)

    @classmethod
    def spawn(cls, *, log_path: str | Path | None = None, ready_timeout: float = 120.0,
              tcp: bool = False, env: Mapping[str, str] | None = None) -> EngineClient:
        """Start an engine process (``python -m app.engine``) and connect to it.

        Its stderr goes to ``log_path`` (appended), or to a temporary file removed at close.
        ``env`` adds environment variables (``CUDA_VISIBLE_DEVICES``...). Closing the client
        stops the process; so does this process ending.
        """
        process, address, token = EngineProcess.start(
            log_path=log_path, ready_timeout=ready_timeout, tcp=tcp, env=env)
        try:
            return cls(address, token, process=process)
        except BaseException:
            process.stop()
            process.cleanup()
            raise

    @property
    def log_path(self) -> Path | None:
        """The engine's log file, where this client started the engine."""
        return self.process.log_path if self.process else None

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests -------------------------------------------------------------------------

    def info(self) -> BuildInfo:
        """What this build of llama.cpp has: backends, devices and their memory, the patch."""
        return from_wire(BuildInfo, self._wait(self._start("info")), "data")

    def load(self, params: LoadParams,
             on_progress: Callable[[Progress], None] | None = None) -> LoadResult:
        """Load a model (unloading any previous one); ``on_progress`` runs on this thread."""
        stream = self.start_load(params)
        for progress in stream:
            if on_progress is not None:
                on_progress(progress)
        return stream.result

    def start_load(self, params: LoadParams) -> LoadStream:
        """Start loading; returns at once with the load's progress stream (and ``cancel``)."""
        return LoadStream(self, self._start("load", params))

    def unload(self) -> None:
        self._wait(self._start("unload"))

    def chat(self, params: ChatParams) -> ChatStream:
        """Start generating; returns at once with the stream of the answer."""
        return ChatStream(self, self._start("chat", params))

    def cancel(self, request_id: int) -> bool:
        """Cancel a running load or chat of this client; False if it had already ended."""
        data = self._wait(self._start("cancel", CancelParams(request=request_id)))
        return bool(data.get("cancelled"))

    def stats(self) -> EngineStats:
        return from_wire(EngineStats, self._wait(self._start("stats")), "data")

    def routing(self) -> RoutingSnapshot:
        """Routed expert selections counted since load (TelemetryUnavailableError if off)."""
        return from_wire(RoutingSnapshot, self._wait(self._start("routing")), "data")

    def subscribe(self, params: SubscribeParams | None = None,
                  on_stats: Callable[[EngineStats], None] | None = None,
                  on_routing: Callable[[RoutingSnapshot], None] | None = None) -> None:
        """Have the engine push stats (and routing, while a model with telemetry is loaded)
        every ``params.interval_s``; the callbacks run on the client's reader thread, so they
        must be quick and must not wait for other calls of this client. A new subscribe
        replaces the last; ``SubscribeParams(stats=False, routing=False)`` stops them."""
        self._on_stats, self._on_routing = on_stats, on_routing
        self._wait(self._start("subscribe", params or SubscribeParams()))

    def shutdown(self, timeout: float = 60.0) -> None:
        """Ask the engine to exit, and (for a spawned engine) wait until it has."""
        self._shut_down = True
        self._wait(self._start("shutdown"))
        if self.process is not None:
            self.process.stop(timeout)  # it is exiting; stop() insists if it hangs

    def close(self) -> None:
        """Disconnect; stop the engine process if this client started it. Idempotent."""
        if self._closing:
            return
        self._closing = True
        # shutdown, not just close: it wakes the reader blocked in recv (close alone does not,
        # on Linux); the reader then fails every pending call
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=30)
        self._stream.close()
        if self.process is not None:
            self.process.stop()
            self.process.cleanup()

    # --- plumbing -------------------------------------------------------------------------

    def _start(self, method: str, params: Any = None) -> _Call:
        with self._lock:
            if self._died is not None:
                raise _copy(self._died)
            call = _Call(next(self._ids))
            self._pending[call.request_id] = call
        self._send(call.request_id, method, params)
        return call

    def _send_and_forget(self, method: str, params: Any = None) -> None:
        with self._lock:
            if self._died is not None:
                return
            request_id = next(self._ids)
            self._pending[request_id] = None
        try:
            self._send(request_id, method, params)
        except EngineError:
            pass  # the engine is gone; there is nothing left to cancel

    def _send(self, request_id: int, method: str, params: Any) -> None:
        try:
            with self._send_lock:
                send_message(self._sock, request(request_id, method, params))
        except OSError:
            # the engine is gone; the reader thread is finding out how, and will say so
            if threading.current_thread() is not self._reader:
                self._reader.join(timeout=30)
            with self._lock:
                self._pending.pop(request_id, None)
                died = self._died
            lost = EngineDiedError("lost the connection to the engine.")
            raise (_copy(died) if died else lost) from None

    def _next_event(self, call: _Call) -> Message | EngineError:
        if threading.current_thread() is self._reader:
            raise RuntimeError("a subscription callback must not wait for engine replies")
        return call.events.get()

    def _wait(self, call: _Call) -> Any:
        """The ``done`` data of a request without streamed events."""
        while True:
            message = self._next_event(call)
            if isinstance(message, EngineError):
                raise _copy(message)
            if message["event"] == "done":
                return message["data"]
            if message["event"] == "error":
                raise error_from_wire(message["data"])

    def _read_loop(self) -> None:
        reason = "the engine closed the connection"
        try:
            while True:
                message = recv_message(self._stream)
                if message is None:
                    break
                self._route(message)
        except (OSError, ProtocolError) as exc:
            reason = f"the connection to the engine failed ({exc})"
        except Exception as exc:  # garbage from the engine must still fail the calls, not hang them
            log.exception("engine client reader failed")
            reason = f"the engine sent something unreadable ({exc!r})"
        self._disconnected(reason)

    def _route(self, message: Message) -> None:
        name = message.get("event")
        request_id = message.get("request")
        if not isinstance(request_id, int):
            self._pushed(name, message.get("data"))
            return
        with self._lock:
            call = self._pending.get(request_id)
            if name in ("done", "error"):
                self._pending.pop(request_id, None)
        if call is not None:
            call.events.put(message)

    def _pushed(self, name: object, data: Any) -> None:
        """A subscription event, or an error about a frame the engine could not read."""
        try:
            if name == "stats" and self._on_stats is not None:
                self._on_stats(from_wire(EngineStats, data, "data"))
            elif name == "routing" and self._on_routing is not None:
                self._on_routing(from_wire(RoutingSnapshot, data, "data"))
            elif name == "error":
                log.warning("the engine refused a message: %s", error_from_wire(data))
        except Exception:
            log.exception("a %s subscription callback failed", name)

    def _disconnected(self, reason: str) -> None:
        """The socket ended: fail every pending call, and every later one, with one error."""
        if self._closing:
            error: EngineError = EngineDiedError("this engine client is closed.")
        elif self.process is not None:
            error = self.process.died_error(expected=self._shut_down)
        elif self._shut_down:
            error = EngineDiedError("the engine has shut down.")
        else:
            error = EngineDiedError(f"{reason}.", "The engine may have crashed; see its log.")
        with self._lock:
            self._died = error
            pending = [call for call in self._pending.values() if call is not None]
            self._pending.clear()
        for call in pending:
            call.events.put(error)
