"""The engine's server: accepts clients, dispatches their requests, pushes events back.

One asyncio loop on the main thread does all socket I/O for any number of connections and
answers quick requests (info, stats, routing, cancel, subscribe) itself, at once, even while
a model loads or generates. Long work runs on a single worker thread: a load or unload job,
or the batch loop that generates every running chat (up to the model's ``n_parallel`` at
once, ``app.engine.batch_loop``); its progress and tokens go from that thread straight into
the socket (``Connection.send``), its ends hop back to the loop with ``call_soon_threadsafe``
and leave as events after them. Chats that find every slot taken wait their
turn, round-robin over the connections that have chats waiting (``FairQueue``), and join the
batch loop between its steps as slots free; a load or unload never waits: it is refused as
``busy`` while anything runs or waits. The protocol is in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import math
import os
import reprlib
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from app.engine.protocol import (
    METHODS,
    PROTOCOL_VERSION,
    CancelParams,
    ChatParams,
    EngineStats,
    Hello,
    LoadParams,
    RoutingSnapshot,
    SubscribeParams,
    event,
    from_wire,
)
from app.engine.runtime import Runtime
from app.engine.scheduler import Job, Jobs, end_unstarted, forwarder
from app.engine.transport import Answered, Connection, peer_uid
from app.errors import (
    AuthenticationError,
    EngineError,
    NoModelLoadedError,
    ProtocolError,
    TelemetryUnavailableError,
    VersionMismatchError,
)

log = logging.getLogger("moedesk.engine.server")

HELLO_TIMEOUT_S = 30.0  # a peer that does not authenticate is not kept waiting forever
MIN_PUSH_INTERVAL_S = 0.05
NO_PARAMS = ("info", "stats", "routing", "unload", "shutdown")
# On shutdown, how long a running job gets to notice its cancel before the engine gives up.
JOB_STOP_TIMEOUT_S = 30.0


class EngineServer:
    """Serves one Runtime to any number of authenticated local clients."""

    def __init__(self, runtime: Runtime, token: str) -> None:
        self.runtime = runtime
        self._token = token.encode("utf-8")
        self._connections: set[Connection] = set()
        self._count = 0
        self.jobs = Jobs(runtime)  # loads, unloads and chats: running and waiting
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._shutdown_requested = threading.Event()
        self.job_stuck = False  # a job ignored its cancel at shutdown: exit without waiting
        self._handlers: dict[str, Callable[[Connection, int, Any], Awaitable[None]]] = {
            "hello": self._on_hello_again, "info": self._on_info, "stats": self._on_stats,
            "routing": self._on_routing, "cancel": self._on_cancel,
            "subscribe": self._on_subscribe, "shutdown": self._on_shutdown,
            "load": self._on_load, "unload": self._on_unload, "chat": self._on_chat,
        }
        assert set(self._handlers) == set(METHODS)

    # --- lifecycle ----------------------------------------------------------------------

    def serve(self, sock: socket.socket) -> None:
        """Serve on a listening socket until shutdown (a request, SIGTERM, or request_shutdown)."""
        asyncio.run(self._serve(sock))

    def request_shutdown(self) -> None:
        """Stop serving; safe to call from any thread, before or during ``serve``."""
        self._shutdown_requested.set()
        loop = self._loop
        if loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(self._stop_serving)

    def _stop_serving(self) -> None:
        """From now on no job starts (new requests are ``busy``); ``_serve`` winds down."""
        self.jobs.stopping = True
        assert self._stop is not None
        self._stop.set()

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._shutdown_requested.is_set():
            self._stop_serving()
        with contextlib.suppress(NotImplementedError, AttributeError):  # not on Windows
            self._loop.add_signal_handler(signal.SIGTERM, self._stop_serving)
        if sock.family == getattr(socket, "AF_UNIX", None):
            server = await asyncio.start_unix_server(self._handle, sock=sock)
        else:
            server = await asyncio.start_server(self._handle, sock=sock)
        log.info("serving on %s", sock.getsockname())
        try:
            await self._stop.wait()
        finally:
            log.info("shutting down")
            server.close()
            self.job_stuck = not await self.jobs.stop(JOB_STOP_TIMEOUT_S)
            for conn in list(self._connections):
                conn.close()
            await asyncio.sleep(0)  # let the closes reach the transports
            if not self.job_stuck:
                await self._loop.run_in_executor(self.jobs.executor, self.runtime.unload)
            self.jobs.executor.shutdown(wait=False)

    # --- one connection ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._count += 1
        conn = Connection(self._count, reader, writer)
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else None
        if uid is not None and uid != os.getuid():
            log.warning("connection %s: refused a peer of uid %d", conn.name, uid)
            conn.abort()
            return
        self._connections.add(conn)
        log.info("connection %s: open", conn.name)
        try:
            while not conn.closed:
                if conn.authenticated:
                    message = await conn.read_message()
                else:
                    message = await asyncio.wait_for(conn.read_message(), HELLO_TIMEOUT_S)
                if message is None:
                    break
                if not isinstance(message, Answered):
                    await self._dispatch(conn, message)
        except asyncio.TimeoutError:
            log.info("connection %s: no hello within %.0f s", conn.name, HELLO_TIMEOUT_S)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass  # the client vanished mid-frame; nothing to answer
        except Exception:  # a bug: lose this connection, never the engine
            log.exception("connection %s: failed", conn.name)
        finally:
            self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        """Forget a connection: stop its pushes, and cancel a job nobody can receive now."""
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        if conn.subscription is not None:
            conn.subscription.cancel()
        dropped = self.jobs.drop(conn)
        if dropped:
            log.info("connection %s: gone; dropped its %d waiting chat(s)", conn.name, dropped)
        conn.close()
        log.info("connection %s: closed", conn.name)

    async def _dispatch(self, conn: Connection, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            conn.fail(None, ProtocolError("a request needs an integer \"id\"",
                                          "Send {\"id\": int, \"method\": str, \"params\": {}}."))
            if not conn.authenticated:
                conn.close()
            return
        method = message.get("method")
        params = message.get("params")
        params = {} if params is None else params
        if not conn.authenticated:
            self._hello(conn, request_id, method, params)
            return
        handler = self._handlers.get(method) if isinstance(method, str) else None
        if handler is None:
            conn.fail(request_id, ProtocolError(f"unknown method {reprlib.repr(method)}",
                                                f"Known methods: {', '.join(METHODS)}."))
            return
        log.debug("connection %s: %s request %d", conn.name, method, request_id)
        if method in NO_PARAMS and params != {}:
            conn.fail(request_id, ProtocolError(f"params: {method} takes no parameters"))
            return
        try:
            await handler(conn, request_id, params)
        except EngineError as exc:
            conn.fail(request_id, exc)
        except Exception as exc:  # a bug in the engine must not end it or the connection
            log.exception("connection %s: %s request failed", conn.name, method)
            conn.fail(request_id, EngineError(f"internal engine error: {exc!r}",
                                              "Report this as a bug, with the engine log."))

    def _hello(self, conn: Connection, request_id: int, method: object, params: object) -> None:
        """Authenticate: the token first (constant time), then the protocol version."""
        token = params.get("token") if isinstance(params, dict) else None
        if (method != "hello" or not isinstance(token, str)
                or not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token)):
            log.warning("connection %s: refused, no valid hello token", conn.name)
            conn.fail(request_id, AuthenticationError(
                "the engine refused the connection: the first message must be hello with the "
                "engine's token.", "Connect with the token the engine was started with."))
            conn.close()
            return
        version = params.get("protocol") if isinstance(params, dict) else None
        if version != PROTOCOL_VERSION:
            conn.fail(request_id, VersionMismatchError(
                f"the client speaks protocol {reprlib.repr(version)}, this engine speaks {PROTOCOL_VERSION}.",
                "Use the client and the engine of the same MoE Desk installation."))
            conn.close()
            return
        try:
            hello = from_wire(Hello, params)
        except ProtocolError as exc:
            conn.fail(request_id, exc)
            conn.close()
            return
        conn.authenticated = True
        log.info("connection %s: authenticated (%s)", conn.name, hello.client or "unnamed client")
        conn.reply(request_id, {"protocol": PROTOCOL_VERSION, "pid": os.getpid()})

    # --- quick requests, answered on the loop ---------------------------------------------

    async def _on_hello_again(self, conn: Connection, request_id: int, params: Any) -> None:
        conn.reply(request_id, {"protocol": PROTOCOL_VERSION, "pid": os.getpid()})

    async def _on_info(self, conn: Connection, request_id: int, params: Any) -> None:
        conn.reply(request_id, self.runtime.build_info())

    async def _on_stats(self, conn: Connection, request_id: int, params: Any) -> None:
        conn.reply(request_id, self._stats())

    def _stats(self) -> EngineStats:
        """The runtime's figures, with how many chats run and wait (the runtime cannot know)."""
        stats = self.runtime.stats()
        if stats.state != "loading":
            # the chats' own count says whether they run: the batch loop may still be winding
            # down on the worker after the last one's end went out, or not yet have started
            stats.state = "generating" if self.jobs.chats else "idle"
        return dataclasses.replace(stats, chats_running=len(self.jobs.chats),
                                   chats_waiting=len(self.jobs.waiting))

    async def _on_routing(self, conn: Connection, request_id: int, params: Any) -> None:
        conn.reply(request_id, self._routing())

    def _routing(self) -> RoutingSnapshot:
        """The routing counts, never while a load or unload runs: those free the llama.cpp
        context the counts are read from. Jobs start only on this thread, so none can start
        during the read; a running chat keeps its context."""
        job = self.jobs.job
        if job is not None:
            raise NoModelLoadedError(f"no model to count routing for while a {job.method} "
                                     "runs.", "Ask again when it has finished.")
        return self.runtime.routing()

    async def _on_cancel(self, conn: Connection, request_id: int, params: Any) -> None:
        target = from_wire(CancelParams, params).request
        # request ids belong to their connection: a client cancels only its own requests
        job = self.jobs.running(conn, target)
        running = job is not None
        waiting = None if running else self.jobs.waiting.remove(conn,
                                                                 lambda j: j.request_id == target)
        if job is not None:
            job.cancelled.set()
            log.info("connection %s: cancel of %s request %d", conn.name, job.method, target)
        conn.reply(request_id, {"cancelled": running or waiting is not None})
        if waiting is not None:
            log.info("connection %s: cancel of waiting chat %d", conn.name, target)
            end_unstarted(waiting)

    async def _on_subscribe(self, conn: Connection, request_id: int, params: Any) -> None:
        wanted = from_wire(SubscribeParams, params)
        if not math.isfinite(wanted.interval_s) or wanted.interval_s <= 0:
            raise ProtocolError("params.interval_s: must be a positive number of seconds")
        wanted.interval_s = max(wanted.interval_s, MIN_PUSH_INTERVAL_S)
        if conn.subscription is not None:
            conn.subscription.cancel()
            conn.subscription = None
        conn.reply(request_id, {"interval_s": wanted.interval_s})
        if wanted.stats or wanted.routing:
            conn.subscription = asyncio.get_running_loop().create_task(self._push(conn, wanted))

    async def _push(self, conn: Connection, wanted: SubscribeParams) -> None:
        """Stats and routing for one subscriber at its interval, skipping a beat while earlier
        messages still wait in its send buffer (a slow client never gets a pile of them)."""
        while not conn.closed:
            if not conn.backlogged():
                try:
                    if wanted.stats:
                        conn.send(event("stats", None, self._stats()))
                    if wanted.routing:
                        with contextlib.suppress(NoModelLoadedError, TelemetryUnavailableError):
                            conn.send(event("routing", None, self._routing()))
                except Exception:
                    log.exception("connection %s: a stats push failed", conn.name)
            await asyncio.sleep(wanted.interval_s)

    async def _on_shutdown(self, conn: Connection, request_id: int, params: Any) -> None:
        log.info("connection %s: shutdown requested", conn.name)
        conn.reply(request_id)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.writer.drain(), 5.0)
        self._stop_serving()

    # --- jobs: app.engine.scheduler runs them ------------------------------------------------

    async def _on_load(self, conn: Connection, request_id: int, params: Any) -> None:
        load = from_wire(LoadParams, params)
        job = Job(request_id, "load", conn)
        progress = forwarder(job, "progress")
        job.work = lambda: self.runtime.load(load, progress, job.cancelled)
        self.jobs.submit(job, may_wait=False)

    async def _on_unload(self, conn: Connection, request_id: int, params: Any) -> None:
        job = Job(request_id, "unload", conn, work=self.runtime.unload)
        self.jobs.submit(job, may_wait=False)

    async def _on_chat(self, conn: Connection, request_id: int, params: Any) -> None:
        chat = from_wire(ChatParams, params)
        if chat.prompt is not None and chat.messages:
            raise ProtocolError("params: a chat has either messages or a raw prompt, not both")
        job = Job(request_id, "chat", conn)
        job.chat = self.jobs.chat_request(job, chat)
        self.jobs.submit(job, may_wait=True)
