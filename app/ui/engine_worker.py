"""The EngineController's worker side: every blocking call to the engine, off the UI thread.

``EngineWorker`` owns one ``EngineClient`` (and so one engine process) at a time. Its jobs run on
one worker thread, in order (start, load, chat, unload, restart), so a load requested while the
engine starts simply waits its turn; cancels go out on a second thread so that a stop is never
stuck behind the answer it stops; a watcher thread per engine process notices when it ends on
its own (a crash, the OOM killer, ``kill -9``) even when no call is in flight.

It knows nothing of Qt: whatever it has to say, it hands to ``post`` as a call of an
``EngineEvents`` method, and the EngineController runs that call on the UI thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app.engine.client import ChatStream, EngineClient
from app.engine.protocol import (
    BuildInfo,
    ChatParams,
    ChatResult,
    EngineStats,
    LoadParams,
    LoadResult,
    RoutingSnapshot,
    SubscribeParams,
)
from app.errors import EngineDiedError, EngineError
from app.ui.engine_state import EngineState  # noqa: I001 (sorted below by ruff)

log = logging.getLogger("moedesk.ui.engine")

# work that drives the engine itself: returns its result and the model it leaves loaded (or None)
@dataclass
class JobOutcome:
    """What an engine job (autotune, a benchmark) ends with: its result, and the model it left
    loaded with the LoadParams it loaded it with (None: none), which the controller makes its
    loaded model and what a restart loads again."""

    result: Any
    loaded: LoadResult | None = None
    load: LoadParams | None = None


EngineJob = Callable[[EngineClient], JobOutcome]


@dataclass
class ChatJob:
    """One answer: the UI thread sets ``cancelled``, the worker sets ``stream`` once it is asked."""

    chat_id: int
    stream: ChatStream | None = None
    cancelled: bool = False


class EngineEvents(Protocol):
    """What the worker reports; every call is made on the UI thread (``post`` takes it there)."""

    def on_state(self, state: EngineState) -> None: ...
    def on_started(self, info: BuildInfo) -> None: ...
    def on_load_progress(self, fraction: float) -> None: ...
    def on_loaded(self, result: LoadResult) -> None: ...
    def on_load_failed(self, message: str, hint: str) -> None: ...
    def on_unloaded(self) -> None: ...
    def on_chat_token(self, chat_id: int, text: str) -> None: ...
    def on_chat_finished(self, chat_id: int, result: ChatResult) -> None: ...
    def on_chat_failed(self, chat_id: int, message: str, hint: str) -> None: ...
    def on_job_done(self, on_done: Callable[[Any], None], outcome: JobOutcome) -> None: ...
    def on_job_failed(self, on_error: Callable[[str, str], None], message: str, hint: str) -> None: ...
    def on_stats(self, session: int, stats: EngineStats) -> None: ...
    def on_routing(self, session: int, snapshot: RoutingSnapshot) -> None: ...
    def on_died(self, session: int, message: str, hint: str) -> None: ...


class EngineWorker:
    """Queues engine calls on its worker thread; its public methods return at once."""

    def __init__(self, events: EngineEvents, post: Callable[..., None], *, log_path: Path,
                 stats_interval_s: float) -> None:
        self._events = events
        self._post = post  # post(fn, *args): fn(*args) runs on the UI thread
        self.log_path = log_path
        self._stats_interval_s = stats_interval_s
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-control")
        self._cancels = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-cancel")
        self._client: EngineClient | None = None  # replaced only on the worker thread
        self._model_ready = False  # the worker's own view: a model is loaded in _client
        self._session = 0  # one per engine process; a death is reported once per session
        self._closing_sessions: set[int] = set()  # engines we are stopping on purpose

    @property
    def client(self) -> EngineClient | None:
        """The current engine client (its ``process.popen.pid`` is the engine's pid)."""
        return self._client

    @property
    def session(self) -> int:
        """The current engine process's number: reports of an older one are stale."""
        return self._session

    def stopped_on_purpose(self, session: int) -> bool:
        """Whether that engine was closed by us (its end is not a death)."""
        return session in self._closing_sessions

    # --- what the controller calls (all return at once) -----------------------------------

    def start(self) -> None:
        self._submit(self._ensure_client)

    def load(self, params: LoadParams) -> None:
        self._submit(self._load_job, params)

    def unload(self) -> None:
        self._submit(self._unload_job)

    def chat(self, job: ChatJob, params: ChatParams) -> None:
        self._submit(self._chat_job, job, params)

    def cancel(self, stream: ChatStream) -> None:
        """Cancel an answer from the cancel thread (the worker is busy streaming it)."""
        self._cancels.submit(stream.cancel)

    def run_job(self, job: EngineJob, on_done: Callable[[Any], None], on_error: Callable[[str, str], None],
                state: EngineState) -> None:
        self._submit(self._engine_job, job, on_done, on_error, state)

    def restart(self, reload: Callable[[], LoadParams | None]) -> None:
        """Close the engine now (ending a load or answer in progress), then start a fresh one
        in turn and load ``reload()`` in it, read when the fresh engine is up."""
        self._close_current_soon()
        self._submit(self._restart_job, reload)

    def shutdown(self) -> None:
        """Stop the engine and both threads; may block for up to a few seconds (the engine
        exits as soon as its stdin closes)."""
        client, self._client = self._client, None
        self._closing_sessions.add(self._session)
        self._jobs.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()
        self._cancels.shutdown(wait=False, cancel_futures=True)

    # --- worker-thread jobs ---------------------------------------------------------------

    def _ensure_client(self) -> EngineClient:
        """The running engine's client, spawning an engine first if there is none."""
        if self._client is not None:
            return self._client
        self._post(self._events.on_state, EngineState.STARTING)
        self._session += 1  # before spawning: a failed start is this session's death
        session = self._session
        self._model_ready = False
        client = EngineClient.spawn(log_path=self.log_path)
        try:
            client.subscribe(SubscribeParams(interval_s=self._stats_interval_s),
                             on_stats=lambda s: self._post(self._events.on_stats, session, s),
                             on_routing=lambda r: self._post(self._events.on_routing, session, r))
            info = client.info()
        except BaseException:
            client.close()
            raise
        self._client = client
        threading.Thread(target=self._watch, args=(client, session), name="engine-watch",
                         daemon=True).start()
        self._post(self._events.on_started, info)
        return client

    def _watch(self, client: EngineClient, session: int) -> None:
        """Wait for the engine process to end; unless we stopped it, say how it died."""
        assert client.process is not None
        client.process.wait(None)
        if session not in self._closing_sessions:
            self._died(session, client.process.died_error())

    def _load_job(self, params: LoadParams) -> None:
        session = self._session
        try:
            client = self._ensure_client()
            session = self._session
            self._post(self._events.on_state, EngineState.LOADING)
            self._model_ready = False  # the engine drops the old model first
            stream = client.start_load(params)
            for progress in stream:
                self._post(self._events.on_load_progress, progress.fraction)
            result = stream.result
        except EngineDiedError as exc:
            self._died(session, exc)
            return
        except EngineError as exc:
            self._post(self._events.on_load_failed, exc.message, exc.hint)
            return
        self._model_ready = True
        self._post(self._events.on_loaded, result)

    def _unload_job(self) -> None:
        if self._client is None:
            return
        session = self._session
        self._model_ready = False
        try:
            self._client.unload()
        except EngineDiedError as exc:
            self._died(session, exc)
            return
        except EngineError as exc:
            log.warning("unload failed: %s", exc)
        self._post(self._events.on_unloaded)

    def _chat_job(self, job: ChatJob, params: ChatParams) -> None:
        session = self._session
        try:
            if job.cancelled:
                empty = ChatResult("", "cancelled", 0, 0, 0, 0.0, 0.0, 0.0)
                self._post(self._events.on_chat_finished, job.chat_id, empty)
                return
            if self._client is None or not self._model_ready:
                self._post(self._events.on_chat_failed, job.chat_id, "No model is loaded.",
                           "Load one on the Models page (or Engine > Load model file).")
                return
            job.stream = self._client.chat(params)
            if job.cancelled:  # stop pressed while the request went out
                job.stream.cancel()
            self._post(self._events.on_state, EngineState.GENERATING)
            for text in job.stream.texts():
                self._post(self._events.on_chat_token, job.chat_id, text)
            result = job.stream.result
        except EngineDiedError as exc:
            if session in self._closing_sessions:
                self._post(self._events.on_chat_failed, job.chat_id, "The engine was restarted.", "")
            else:
                self._post(self._events.on_chat_failed, job.chat_id, exc.message, exc.hint)
                self._died(session, exc)
            return
        except EngineError as exc:
            self._post(self._events.on_chat_failed, job.chat_id, exc.message, exc.hint)
            return
        self._post(self._events.on_chat_finished, job.chat_id, result)

    def _engine_job(self, job: EngineJob, on_done: Callable[[Any], None],
                    on_error: Callable[[str, str], None], state: EngineState) -> None:
        session = self._session
        try:
            client = self._ensure_client()
            session = self._session
            self._post(self._events.on_state, state)
            self._model_ready = False  # the job may load and unload models
            outcome = job(client)
        except EngineDiedError as exc:
            self._died(session, exc)
            return
        except EngineError as exc:
            self._post(self._events.on_job_failed, on_error, exc.message, exc.hint)
            return
        except Exception as exc:  # a bug in the job must not leave the UI waiting
            log.exception("engine job failed")
            self._post(self._events.on_job_failed, on_error, f"{type(exc).__name__}: {exc}", "")
            return
        self._model_ready = outcome.loaded is not None
        self._post(self._events.on_job_done, on_done, outcome)

    def _restart_job(self, reload: Callable[[], LoadParams | None]) -> None:
        self._close_current()
        try:
            self._ensure_client()
        except EngineError as exc:
            self._died(self._session, exc)
            return
        params = reload()
        if params is not None:
            self._load_job(params)

    def _close_current(self) -> None:
        """Stop the current engine on purpose (it is not reported as a death)."""
        client, self._client = self._client, None
        if client is not None:
            self._closing_sessions.add(self._session)
            client.close()

    def _close_current_soon(self) -> None:
        """Close the client from the cancel thread: that ends a load or answer in progress at
        once (its job sees the closed client), so the restart queued behind it runs."""
        client = self._client
        if client is not None:
            self._closing_sessions.add(self._session)
            self._cancels.submit(client.close)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except EngineError as exc:  # e.g. the engine failed to start
                self._died(self._session, exc)
            except Exception:
                log.exception("engine job %s failed", getattr(fn, "__name__", fn))
        with contextlib.suppress(RuntimeError):  # after shutdown(): nothing more to do
            self._jobs.submit(run)

    def _died(self, session: int, error: EngineError) -> None:
        self._post(self._events.on_died, session, error.message, error.hint)
