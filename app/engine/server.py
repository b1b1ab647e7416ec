"""The engine's server: accepts clients, dispatches their requests, pushes events back.

One asyncio loop on the main thread does all socket I/O for any number of connections and
answers quick requests (info, stats, routing, cancel, subscribe) itself, at once, even while
a model loads or generates. Long work runs on a single worker thread: a load or unload job,
or the batch loop that generates every running chat (up to the model's ``n_parallel`` at
once, ``app.engine.batch_loop``); progress, tokens and ends hop back to the loop with
``call_soon_threadsafe`` and leave as events. Chats that find every slot taken wait their
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
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.engine.batch_loop import ChatRequest, unstarted_result
from app.engine.errors import (
    AuthenticationError,
    EngineBusyError,
    EngineError,
    NoModelLoadedError,
    ProtocolError,
    TelemetryUnavailableError,
    VersionMismatchError,
)
from app.engine.protocol import (
    METHODS,
    PROTOCOL_VERSION,
    CancelParams,
    ChatParams,
    ChatResult,
    EngineStats,
    Hello,
    LoadParams,
    RoutingSnapshot,
    SubscribeParams,
    event,
    from_wire,
)
from app.engine.runtime import Runtime
from app.engine.scheduler import FairQueue
from app.engine.transport import Answered, Connection, peer_uid

log = logging.getLogger("moedesk.engine.server")

HELLO_TIMEOUT_S = 30.0  # a peer that does not authenticate is not kept waiting forever
MIN_PUSH_INTERVAL_S = 0.05
NO_PARAMS = ("info", "stats", "routing", "unload", "shutdown")
# On shutdown, how long a running job gets to notice its cancel before the engine gives up.
JOB_STOP_TIMEOUT_S = 30.0


@dataclass(eq=False)
class Job:
    """A long request (load, unload or chat): waiting its turn, or running."""

    request_id: int
    method: str
    connection: Connection
    work: Callable[[], Any] = lambda: None  # what the worker runs (load, unload)
    chat: ChatRequest | None = None  # what the batch loop runs (chat)
    cancelled: threading.Event = field(default_factory=threading.Event)


class EngineServer:
    """Serves one Runtime to any number of authenticated local clients."""

    def __init__(self, runtime: Runtime, token: str) -> None:
        self.runtime = runtime
        self._token = token.encode("utf-8")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-job")
        self._connections: set[Connection] = set()
        self._count = 0
        self.job: Job | None = None  # the running load or unload
        self.chats: list[Job] = []  # the running chats, handed to the batch loop
        self.waiting: FairQueue[Connection, Job] = FairQueue()  # chats waiting their turn
        self._job_task: asyncio.Task[None] | None = None
        self._batch_task: asyncio.Task[None] | None = None  # runs the batch loop while needed
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
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._shutdown_requested.is_set():
            self._stop.set()
        with contextlib.suppress(NotImplementedError, AttributeError):  # not on Windows
            self._loop.add_signal_handler(signal.SIGTERM, self._stop.set)
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
            for _conn, job in self.waiting.drain():
                self._end_unstarted(job)
            await self._stop_job()
            for conn in list(self._connections):
                conn.close()
            await asyncio.sleep(0)  # let the closes reach the transports
            if not self.job_stuck:
                await self._loop.run_in_executor(self._executor, self.runtime.unload)
            self._executor.shutdown(wait=False)

    async def _stop_job(self) -> None:
        """Cancel the running job and chats, and wait for their ends to be sent."""
        for running in [self.job, *self.chats]:
            if running is not None:
                running.cancelled.set()
        for task in (self._job_task, self._batch_task):
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), JOB_STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.error("the running work did not stop within %.0f s", JOB_STOP_TIMEOUT_S)
                self.job_stuck = True

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
        dropped = self.waiting.forget(conn)  # nobody is left to receive their answers
        if dropped:
            log.info("connection %s: gone; dropped its %d waiting chat(s)", conn.name, len(dropped))
        for job in [self.job, *self.chats]:
            if job is not None and job.connection is conn:
                log.info("connection %s: gone; cancelling its %s", conn.name, job.method)
                job.cancelled.set()
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
            conn.fail(request_id, ProtocolError(f"unknown method {method!r}",
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
                f"the client speaks protocol {version!r}, this engine speaks {PROTOCOL_VERSION}.",
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
        return dataclasses.replace(self.runtime.stats(), chats_running=len(self.chats),
                                   chats_waiting=len(self.waiting))

    async def _on_routing(self, conn: Connection, request_id: int, params: Any) -> None:
        conn.reply(request_id, self._routing())

    def _routing(self) -> RoutingSnapshot:
        """The routing counts, never while a load or unload runs: those free the llama.cpp
        context the counts are read from. Jobs start only on this thread, so none can start
        during the read; a running chat keeps its context."""
        if self.job is not None:
            raise NoModelLoadedError(f"no model to count routing for while a {self.job.method} "
                                     "runs.", "Ask again when it has finished.")
        return self.runtime.routing()

    async def _on_cancel(self, conn: Connection, request_id: int, params: Any) -> None:
        target = from_wire(CancelParams, params).request
        # request ids belong to their connection: a client cancels only its own requests
        job = next((j for j in [self.job, *self.chats]
                    if j is not None and j.connection is conn and j.request_id == target), None)
        running = job is not None
        waiting = None if running else self.waiting.remove(conn, lambda j: j.request_id == target)
        if job is not None:
            job.cancelled.set()
            log.info("connection %s: cancel of %s request %d", conn.name, job.method, target)
        conn.reply(request_id, {"cancelled": running or waiting is not None})
        if waiting is not None:
            log.info("connection %s: cancel of waiting chat %d", conn.name, target)
            self._end_unstarted(waiting)

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
        assert self._stop is not None
        self._stop.set()

    # --- jobs, run on the worker thread ---------------------------------------------------

    async def _on_load(self, conn: Connection, request_id: int, params: Any) -> None:
        load = from_wire(LoadParams, params)
        job = Job(request_id, "load", conn)
        progress = self._forwarder(job, "progress")
        job.work = lambda: self.runtime.load(load, progress, job.cancelled)
        self._submit(job, may_wait=False)

    async def _on_unload(self, conn: Connection, request_id: int, params: Any) -> None:
        job = Job(request_id, "unload", conn, work=self.runtime.unload)
        self._submit(job, may_wait=False)

    async def _on_chat(self, conn: Connection, request_id: int, params: Any) -> None:
        chat = from_wire(ChatParams, params)
        if chat.prompt is not None and chat.messages:
            raise ProtocolError("params: a chat has either messages or a raw prompt, not both")
        job = Job(request_id, "chat", conn)
        job.chat = ChatRequest(chat, self._forwarder(job, "token"), self._ender(job),
                               job.cancelled)
        self._submit(job, may_wait=True)

    def _submit(self, job: Job, *, may_wait: bool) -> None:
        """Run the job now or, if it may wait (chats), when its turn comes. A load or unload
        that would have to wait is refused instead: it would change the model under the
        chats before it."""
        if self._stop is not None and self._stop.is_set():
            raise EngineBusyError("the engine is shutting down.", "Start a new engine.")
        if not may_wait and (self.job is not None or self.chats or len(self.waiting)):
            doing = (self.job.method if self.job is not None
                     else f"{len(self.chats)} running chat(s)" if self.chats else "waiting chat")
            raise EngineBusyError(
                f"the engine is busy with a {doing} and loads or unloads only when no chat runs "
                f"or waits ({len(self.waiting)} waiting).", "Wait for them to finish, or cancel them.")
        self.waiting.push(job.connection, job)
        if self.job is not None or len(self.chats) >= self.runtime.n_parallel:
            log.info("connection %s: %s request %d waits (%d waiting)", job.connection.name,
                     job.method, job.request_id, len(self.waiting))
        self._start_next()

    def _start_next(self) -> None:
        """Start waiting requests while there is room (round-robin over connections): a
        load or unload when nothing else runs (only then is one queued), chats while the
        loaded model has free slots."""
        while self.job is None and not (self._stop is not None and self._stop.is_set()):
            if len(self.chats) >= self.runtime.n_parallel:
                return
            entry = self.waiting.pop()
            if entry is None:
                return
            job = entry[1]
            if job.chat is None:
                self.job = job
                self._job_task = asyncio.get_running_loop().create_task(self._job_main(job))
                return
            self._start_chat(job)

    def _start_chat(self, job: Job) -> None:
        """Hand a chat to the batch loop, and run the loop if it is not running."""
        assert job.chat is not None
        try:
            self.runtime.admit(job.chat)
        except EngineError as exc:  # no model
            job.connection.send(event("error", job.request_id, exc.to_wire()))
            return
        self.chats.append(job)
        log.info("connection %s: chat request %d started (%d running)", job.connection.name,
                 job.request_id, len(self.chats))
        if self._batch_task is None:
            self._batch_task = asyncio.get_running_loop().create_task(self._batch_main())

    async def _batch_main(self) -> None:
        """Run the batch loop on the worker while it has chats. A chat admitted after the
        loop found none left is seen here, on this thread, before the task lets go."""
        loop = asyncio.get_running_loop()
        try:
            while self.runtime.chats_pending():
                await loop.run_in_executor(self._executor, self.runtime.run_chats)
        except Exception:
            log.exception("the batch loop failed")
        finally:
            self._batch_task = None

    def _ender(self, job: Job) -> Callable[[ChatResult | EngineError], None]:
        """The batch loop's end-of-chat callback (worker thread): the chat's terminal event,
        sent from the loop after its slot is counted free."""
        loop = asyncio.get_running_loop()

        def ended(outcome: ChatResult | EngineError) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                loop.call_soon_threadsafe(self._chat_ended, job, outcome)

        return ended

    def _chat_ended(self, job: Job, outcome: ChatResult | EngineError) -> None:
        # free the slot before the client can see the end: its next request must not be busy
        if job in self.chats:
            self.chats.remove(job)
        if isinstance(outcome, EngineError):
            terminal = event("error", job.request_id, outcome.to_wire())
        else:
            terminal = event("done", job.request_id, outcome)
        log.info("connection %s: chat request %d ended (%s)", job.connection.name,
                 job.request_id, terminal["event"])
        job.connection.send(terminal)
        self._start_next()

    def _end_unstarted(self, job: Job) -> None:
        """End a chat that will never run (cancelled while waiting, or the engine stopping)
        the way a chat cancelled before its first token ends. Only chats wait."""
        assert job.method == "chat"
        job.connection.send(event("done", job.request_id, unstarted_result()))

    def _forwarder(self, job: Job, name: str) -> Callable[[Any], None]:
        """A callback for the worker thread that sends each item as an event of ``job``."""
        loop = asyncio.get_running_loop()
        conn = job.connection

        def forward(item: Any) -> None:
            if not conn.closed:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                    loop.call_soon_threadsafe(conn.send, event(name, job.request_id, item))

        return forward

    async def _job_main(self, job: Job) -> None:
        log.info("connection %s: %s request %d started", job.connection.name, job.method,
                 job.request_id)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, job.work)
            terminal = event("done", job.request_id, result)
        except EngineError as exc:
            terminal = event("error", job.request_id, exc.to_wire())
        except Exception as exc:
            log.exception("%s request %d failed", job.method, job.request_id)
            terminal = event("error", job.request_id, EngineError(
                f"internal engine error: {exc!r}", "Report this as a bug, with the engine log."
            ).to_wire())
        # free the worker before the client can see the end: its next request must not be busy
        self.job = None
        self._job_task = None
        log.info("connection %s: %s request %d ended (%s)", job.connection.name, job.method,
                 job.request_id, terminal["event"])
        job.connection.send(terminal)
        self._start_next()
