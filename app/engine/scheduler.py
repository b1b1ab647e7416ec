"""Turns for the engine's long requests: who runs, who waits, and in what order.

The engine runs a load or unload alone, or up to ``n_parallel`` chats at once in its batch
loop. When more chats wait than there are free slots, and several clients (the GUI, the
OpenAI server, a CLI) wait, the next turn goes to the client served least recently, and
within one client to its oldest request, so a client that sends many requests cannot starve
one that sends a few (``FairQueue``, pure data). ``Jobs`` runs them on the engine's event
loop and worker thread; the server (``app.engine.server``) does the rest of the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.engine.batch_loop import ChatRequest, unstarted_result
from app.engine.protocol import ChatParams, ChatResult, event
from app.engine.runtime import Runtime
from app.engine.transport import Connection
from app.errors import EngineBusyError, EngineError

log = logging.getLogger("moedesk.engine.server")

OwnerT = TypeVar("OwnerT", bound=Hashable)
ItemT = TypeVar("ItemT")


class FairQueue(Generic[OwnerT, ItemT]):
    """Items waiting per owner; ``pop`` takes the oldest item of the least recently served owner."""

    def __init__(self) -> None:
        # insertion order breaks ties between owners served equally long ago: first come first
        self._waiting: dict[OwnerT, deque[ItemT]] = {}
        self._last_turn: dict[OwnerT, int] = {}
        self._turns = itertools.count()

    def __len__(self) -> int:
        return sum(len(items) for items in self._waiting.values())

    def push(self, owner: OwnerT, item: ItemT) -> None:
        """Add an item at the end of its owner's line."""
        self._waiting.setdefault(owner, deque()).append(item)

    def pop(self) -> tuple[OwnerT, ItemT] | None:
        """The next item to run and its owner (now the most recently served), or None."""
        if not self._waiting:
            return None
        owner = min(self._waiting, key=lambda o: self._last_turn.get(o, -1))
        items = self._waiting[owner]
        item = items.popleft()
        if not items:
            del self._waiting[owner]
        self._last_turn[owner] = next(self._turns)
        return owner, item

    def remove(self, owner: OwnerT, match: Callable[[ItemT], bool]) -> ItemT | None:
        """Take out the first waiting item of ``owner`` that ``match`` accepts."""
        items = self._waiting.get(owner)
        for item in items or ():
            if match(item):
                items.remove(item)  # type: ignore[union-attr]
                if not items:
                    del self._waiting[owner]
                return item
        return None

    def forget(self, owner: OwnerT) -> list[ItemT]:
        """Drop an owner that is gone; returns its items that were still waiting."""
        self._last_turn.pop(owner, None)
        return list(self._waiting.pop(owner, ()))

    def drain(self) -> list[tuple[OwnerT, ItemT]]:
        """Take out every waiting item, in the order they would have run."""
        drained = []
        while (entry := self.pop()) is not None:
            drained.append(entry)
        return drained

    def count(self, owner: OwnerT) -> int:
        return len(self._waiting.get(owner, ()))


@dataclass(eq=False)
class Job:
    """A long request (load, unload or chat): waiting its turn, or running."""

    request_id: int
    method: str
    connection: Connection
    work: Callable[[], Any] = lambda: None  # what the worker runs (load, unload)
    chat: ChatRequest | None = None  # what the batch loop runs (chat)
    cancelled: threading.Event = field(default_factory=threading.Event)


class Jobs:
    """The engine's long requests, on its event loop: the running load or unload, the running
    chats (in the batch loop, up to the model's ``n_parallel``) and those waiting their turn.

    One worker thread runs a load or unload alone, or the runtime's batch loop while chats
    run. Results hop back from it with ``call_soon_threadsafe`` (tokens and progress go
    straight to the socket, see ``forwarder``); every method here runs on the loop's thread.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-job")
        self.job: Job | None = None  # the running load or unload
        self.chats: list[Job] = []  # the running chats, handed to the batch loop
        self.waiting: FairQueue[Connection, Job] = FairQueue()  # chats waiting their turn
        self.stopping = False  # no job starts any more
        self._job_task: asyncio.Task[None] | None = None
        self._batch_task: asyncio.Task[None] | None = None  # runs the batch loop while needed

    def submit(self, job: Job, *, may_wait: bool) -> None:
        """Run the job now or, if it may wait (chats), when its turn comes. A load or unload
        that would have to wait is refused instead: it would change the model under the
        chats before it."""
        if self.stopping:
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

    def running(self, conn: Connection, request_id: int) -> Job | None:
        """The running load, unload or chat of ``conn`` with that id."""
        return next((j for j in [self.job, *self.chats]
                     if j is not None and j.connection is conn and j.request_id == request_id),
                    None)

    def drop(self, conn: Connection) -> int:
        """A connection is gone: cancel its running jobs and forget its waiting chats (nobody
        is left to receive their answers); returns how many waited."""
        for job in [self.job, *self.chats]:
            if job is not None and job.connection is conn:
                log.info("connection %s: gone; cancelling its %s", conn.name, job.method)
                job.cancelled.set()
        return len(self.waiting.forget(conn))

    async def stop(self, timeout_s: float) -> bool:
        """End waiting chats, cancel the running job and chats, and wait for their ends to be
        sent. Returns False if the worker did not stop within ``timeout_s``."""
        self.stopping = True
        for _conn, job in self.waiting.drain():
            end_unstarted(job)
        for running in [self.job, *self.chats]:
            if running is not None:
                running.cancelled.set()
        stopped = True
        for task in (self._job_task, self._batch_task):
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except asyncio.TimeoutError:
                log.error("the running work did not stop within %.0f s", timeout_s)
                stopped = False
        return stopped

    def _start_next(self) -> None:
        """Start waiting requests while there is room (round-robin over connections): a
        load or unload when nothing else runs (only then is one queued), chats while the
        loaded model has free slots."""
        while self.job is None and not self.stopping:
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
                await loop.run_in_executor(self.executor, self.runtime.run_chats)
        except Exception:
            log.exception("the batch loop failed")
        finally:
            self._batch_task = None

    def chat_request(self, job: Job, chat: ChatParams) -> ChatRequest:
        """What the batch loop needs to run ``job``: its callbacks send its events."""
        loop = asyncio.get_running_loop()

        def ended(outcome: ChatResult | EngineError) -> None:  # on the worker thread
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                loop.call_soon_threadsafe(self._chat_ended, job, outcome)

        return ChatRequest(chat, forwarder(job, "token"), ended, job.cancelled)

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

    async def _job_main(self, job: Job) -> None:
        log.info("connection %s: %s request %d started", job.connection.name, job.method,
                 job.request_id)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.executor, job.work)
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


def end_unstarted(job: Job) -> None:
    """End a chat that will never run (cancelled while waiting, or the engine stopping) the
    way a chat cancelled before its first token ends. Only chats wait."""
    assert job.method == "chat"
    job.connection.send(event("done", job.request_id, unstarted_result()))


def forwarder(job: Job, name: str) -> Callable[[Any], None]:
    """A callback for the worker thread that sends each item as an event of ``job``, from
    that thread (``Connection.send`` is thread-safe: a token skips the event loop)."""
    conn = job.connection

    def forward(item: Any) -> None:
        if not conn.closed:
            conn.send(event(name, job.request_id, item))

    return forward
