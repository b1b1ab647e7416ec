"""The Qt-free client of the engine process; the GUI, the CLI and the tests all use it.

    with EngineClient.spawn() as engine:
        engine.load(LoadParams(model="model.gguf"))
        stream = engine.chat(ChatParams(messages=[ChatMessage("user", "Hello")]))
        for text in stream.texts():  # pieces of the answer (iterating it: every token)
            print(text, end="")
        print(stream.result.decode_tps)

Calls block the calling thread (the GUI calls them from a worker thread). One reader thread
per client takes every event off the socket and hands it to the call waiting for that request
id, so several threads may use one client at once. Failures come back as the exception classes
of ``app.errors``; if the engine process ends, every waiting and later call raises
EngineDiedError saying how it ended and quoting the end of its log.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from app.engine.process import EngineProcess
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
    Address,
    connect,
    recv_message,
    send_message,
)
from app.errors import EngineDiedError, EngineError, ProtocolError, error_from_wire

log = logging.getLogger("moedesk.client")

Message = dict[str, Any]
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

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
    """A chat's tokens as they are generated (one each, some with no text yet). After
    ``cancel()`` it ends normally, with ``result.finish_reason == "cancelled"`` and the text
    generated so far."""

    item_event = "token"
    item_type = Token
    result_type = ChatResult

    def texts(self) -> Iterator[str]:
        """The answer's pieces of text as they come, without the tokens that make none yet."""
        return (token.text for token in self if token.text)


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
        self._token = token  # kept for connect_again; never logged
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

    def connect_again(self, client_name: str = "moedesk") -> EngineClient:
        """Another connection to the same engine: its own request ids and its own turn in
        the engine's round-robin of waiting chats (the OpenAI server uses one beside the
        GUI's). Closing it leaves the engine running."""
        return EngineClient(self.address, self._token, client_name=client_name)

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
