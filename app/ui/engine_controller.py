"""The engine, as the desktop app sees it: a QObject whose methods return at once and whose
results arrive as Qt signals on the UI thread.

It owns one ``EngineClient`` (and so one engine process) at a time. Every blocking call runs on
one worker thread, in order (start, load, chat, unload, restart), so a load requested while the
engine starts simply waits its turn; cancels go out on a second thread so that a stop is never
stuck behind the answer it stops. Workers never emit the public signals themselves: they hand a
callable to the UI thread (``_deliver``), which updates the state and emits, so every slot
connected to this controller runs on the UI thread whatever kind of callable it is.

If the engine process ends on its own (a crash, the OOM killer, ``kill -9``), a watcher thread
notices even when no call is in flight, and ``engine_died`` says how it ended; ``restart()``
starts a fresh engine and loads the last model again.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from app import paths
from app.engine.client import ChatStream, EngineClient
from app.engine.errors import EngineDiedError, EngineError
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

log = logging.getLogger("moedesk.ui.engine")

STATES = ("stopped", "starting", "idle", "loading", "generating", "tuning", "died")


@dataclass
class _ChatJob:
    chat_id: int
    stream: ChatStream | None = None
    cancelled: bool = False


class EngineController(QObject):
    """Start, load, chat, unload, restart the engine without ever blocking the UI thread."""

    state_changed = Signal(str)  # one of STATES
    build_info = Signal(object)  # BuildInfo, once the engine has started
    load_progress = Signal(float)
    model_loaded = Signal(object)  # LoadResult
    model_unloaded = Signal()
    load_failed = Signal(str, str)  # message, hint
    stats = Signal(object)  # EngineStats, pushed ~4x/s while an engine runs
    routing = Signal(object)  # RoutingSnapshot, ~2x/s while a model with telemetry is loaded
    chat_token = Signal(int, str)  # chat id, text
    chat_finished = Signal(int, object)  # chat id, ChatResult
    chat_failed = Signal(int, str, str)  # chat id, message, hint
    engine_died = Signal(str, str)  # message (how it ended), hint

    _deliver = Signal(object)  # a callable, run on the UI thread

    def __init__(self, parent: QObject | None = None, *, log_path: Path | None = None,
                 stats_interval_s: float = 0.25) -> None:
        super().__init__(parent)
        self.log_path = log_path or paths.cache_dir() / "engine.log"
        self._stats_interval_s = stats_interval_s
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-control")
        self._cancels = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-cancel")
        self._deliver.connect(self._run_delivered)
        self._client: EngineClient | None = None  # replaced only on the worker thread
        self._model_ready = False  # the worker's own view: a model is loaded in _client
        self._session = 0  # one per engine process; a death is reported once per session
        self._closing_sessions: set[int] = set()  # engines we are stopping on purpose
        self._reported_deaths: set[int] = set()
        self._chat_ids = itertools.count(1)
        self._chats: dict[int, _ChatJob] = {}
        self.state = "stopped"
        self.last_build_info: BuildInfo | None = None
        self.loaded: LoadResult | None = None  # the model loaded now
        self.last_load: LoadParams | None = None  # what restart() loads again
        self.last_stats: EngineStats | None = None
        self.last_death: tuple[str, str] | None = None

    @property
    def client(self) -> EngineClient | None:
        """The current engine client (its ``process.popen.pid`` is the engine's pid)."""
        return self._client

    # --- what the UI calls (all return at once) -------------------------------------------

    def start(self) -> None:
        """Start an engine process if none is running."""
        if self.state in ("stopped", "died"):
            self._set_state("starting")
            self._submit(self._ensure_client)

    def load(self, params: LoadParams) -> None:
        """Load a model (starting the engine first if needed); replaces any loaded model."""
        self.last_load = params
        self._submit(self._load_job, params)

    def unload(self) -> None:
        """Unload the model; the engine keeps running."""
        self.last_load = None
        self._submit(self._unload_job)

    def chat(self, params: ChatParams) -> int:
        """Start an answer; its tokens, result or error arrive tagged with the returned id."""
        job = _ChatJob(next(self._chat_ids))
        self._chats[job.chat_id] = job
        self._submit(self._chat_job, job, params)
        return job.chat_id

    def stop_chat(self, chat_id: int) -> None:
        """Stop an answer: it ends with ``chat_finished`` (finish_reason "cancelled")."""
        job = self._chats.get(chat_id)
        if job is None:
            return
        job.cancelled = True  # a job not yet started sees this and does not start
        if job.stream is not None:
            self._cancels.submit(job.stream.cancel)

    def run_engine_job(self, job: Callable[[EngineClient], tuple[Any, LoadResult | None]],
                       on_done: Callable[[Any], None], on_error: Callable[[str, str], None],
                       state: str = "tuning") -> None:
        """Run ``job(client)`` on the engine worker, in turn with loads and chats: work that
        drives the engine itself (autotune, benchmarks). The job may load models; it returns
        its result and the model it leaves loaded (None: none), which becomes the loaded one.
        ``on_done(result)`` or ``on_error(message, hint)`` run on the UI thread."""
        self._submit(self._engine_job, job, on_done, on_error, state)

    def restart(self) -> None:
        """Stop the engine (if it still runs) and start a fresh one; the last model is
        loaded again. The one-click answer to ``engine_died``."""
        for chat_id in list(self._chats):
            self.stop_chat(chat_id)
        self._set_state("starting")
        self._close_current_soon()
        self._submit(self._restart_job)

    def shutdown(self) -> None:
        """Stop the engine at application exit. This one call may block for up to a few
        seconds (the engine exits as soon as its stdin closes)."""
        for chat_id in list(self._chats):
            self.stop_chat(chat_id)
        client, self._client = self._client, None
        self._closing_sessions.add(self._session)
        self._jobs.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()
        self._cancels.shutdown(wait=False, cancel_futures=True)
        self.state = "shut down"  # nothing more is delivered

    # --- worker-thread jobs ---------------------------------------------------------------

    def _ensure_client(self) -> EngineClient:
        """The running engine's client, spawning an engine first if there is none."""
        if self._client is not None:
            return self._client
        self._post(self._set_state, "starting")
        self._session += 1  # before spawning: a failed start is this session's death
        session = self._session
        self._model_ready = False
        client = EngineClient.spawn(log_path=self.log_path)
        try:
            client.subscribe(SubscribeParams(interval_s=self._stats_interval_s),
                             on_stats=lambda s: self._post(self._on_stats, session, s),
                             on_routing=lambda r: self._post(self._on_routing, session, r))
            info = client.info()
        except BaseException:
            client.close()
            raise
        self._client = client
        threading.Thread(target=self._watch, args=(client, session), name="engine-watch",
                         daemon=True).start()
        self._post(self._on_started, info)
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
            self._post(self._set_state, "loading")
            self._model_ready = False  # the engine drops the old model first
            stream = client.start_load(params)
            for progress in stream:
                self._post(self.load_progress.emit, progress.fraction)
            result = stream.result
        except EngineDiedError as exc:
            self._died(session, exc)
            return
        except EngineError as exc:
            self._post(self._on_load_failed, exc.message, exc.hint)
            return
        self._model_ready = True
        self._post(self._on_loaded, result)

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
        self._post(self._on_unloaded)

    def _chat_job(self, job: _ChatJob, params: ChatParams) -> None:
        session = self._session
        try:
            if job.cancelled:
                empty = ChatResult("", "cancelled", 0, 0, 0, 0.0, 0.0, 0.0)
                self._post(self._on_chat_finished, job.chat_id, empty)
                return
            if self._client is None or not self._model_ready:
                self._post(self._on_chat_failed, job.chat_id, "No model is loaded.",
                           "Load one on the Models page (or Engine > Load model file).")
                return
            job.stream = self._client.chat(params)
            if job.cancelled:  # stop pressed while the request went out
                job.stream.cancel()
            self._post(self._set_state, "generating")
            for token in job.stream:
                self._post(self.chat_token.emit, job.chat_id, token.text)
            result = job.stream.result
        except EngineDiedError as exc:
            if session in self._closing_sessions:
                self._post(self._on_chat_failed, job.chat_id, "The engine was restarted.", "")
            else:
                self._post(self._on_chat_failed, job.chat_id, exc.message, exc.hint)
                self._died(session, exc)
            return
        except EngineError as exc:
            self._post(self._on_chat_failed, job.chat_id, exc.message, exc.hint)
            return
        self._post(self._on_chat_finished, job.chat_id, result)

    def _engine_job(self, job: Callable[[EngineClient], tuple[Any, LoadResult | None]],
                    on_done: Callable[[Any], None], on_error: Callable[[str, str], None],
                    state: str) -> None:
        session = self._session
        try:
            client = self._ensure_client()
            session = self._session
            self._post(self._set_state, state)
            self._model_ready = False  # the job may load and unload models
            result, loaded = job(client)
        except EngineDiedError as exc:
            self._died(session, exc)
            return
        except EngineError as exc:
            self._post(self._on_job_failed, on_error, exc.message, exc.hint)
            return
        except Exception as exc:  # a bug in the job must not leave the UI waiting
            log.exception("engine job failed")
            self._post(self._on_job_failed, on_error, f"{type(exc).__name__}: {exc}", "")
            return
        self._model_ready = loaded is not None
        self._post(self._on_job_done, on_done, result, loaded)

    def _restart_job(self) -> None:
        self._close_current()
        try:
            self._ensure_client()
        except EngineError as exc:
            self._died(self._session, exc)
            return
        if self.last_load is not None:
            self._load_job(self.last_load)

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

    # --- back on the UI thread ------------------------------------------------------------

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the controller is gone (app exit)
            self._deliver.emit(lambda: fn(*args))

    @Slot(object)
    def _run_delivered(self, fn: Callable[[], Any]) -> None:
        if self.state != "shut down":  # after shutdown() the pages may be gone
            fn()

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
        self._post(self._on_died, session, error.message, error.hint)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    def _on_started(self, info: BuildInfo) -> None:
        self.last_build_info = info
        self.last_death = None
        self.build_info.emit(info)
        self._set_state("idle")

    def _on_loaded(self, result: LoadResult) -> None:
        self.loaded = result
        self._set_state("idle")
        self.model_loaded.emit(result)

    def _on_load_failed(self, message: str, hint: str) -> None:
        self.loaded = None  # the engine dropped the previous model before trying
        self._set_state("idle")
        self.load_failed.emit(message, hint)

    def _on_unloaded(self) -> None:
        self.loaded = None
        self._set_state("idle")
        self.model_unloaded.emit()

    def _on_job_done(self, on_done: Callable[[Any], None], result: Any, loaded: LoadResult | None) -> None:
        self.loaded = loaded
        self._set_state("idle")
        if loaded is not None:
            self.model_loaded.emit(loaded)
        else:
            self.model_unloaded.emit()
        on_done(result)

    def _on_job_failed(self, on_error: Callable[[str, str], None], message: str, hint: str) -> None:
        self.loaded = None  # what the job left loaded is unknown: load again to chat
        self._set_state("idle")
        self.model_unloaded.emit()
        on_error(message, hint)

    def _on_chat_finished(self, chat_id: int, result: ChatResult) -> None:
        self._chats.pop(chat_id, None)
        if self.state == "generating":
            self._set_state("idle")
        self.chat_finished.emit(chat_id, result)

    def _on_chat_failed(self, chat_id: int, message: str, hint: str) -> None:
        self._chats.pop(chat_id, None)
        if self.state == "generating":
            self._set_state("idle")
        self.chat_failed.emit(chat_id, message, hint)

    def _on_stats(self, session: int, stats: EngineStats) -> None:
        if session == self._session and self.state != "died":
            self.last_stats = stats
            self.stats.emit(stats)

    def _on_routing(self, session: int, snapshot: RoutingSnapshot) -> None:
        if session == self._session and self.state != "died":
            self.routing.emit(snapshot)

    def _on_died(self, session: int, message: str, hint: str) -> None:
        if session in self._reported_deaths or session in self._closing_sessions:
            return
        self._reported_deaths.add(session)
        self.loaded = None
        self.last_death = (message, hint)
        self._set_state("died")
        self.engine_died.emit(message, hint)
