"""The engine, as the desktop app sees it: a QObject whose methods return at once and whose
results arrive as Qt signals on the UI thread.

It owns one ``EngineClient`` (and so one engine process) at a time, through an
``EngineWorker`` (engine_worker.py): every blocking call runs on one worker thread, in order
(start, load, chat, unload, restart), and cancels go out on a second thread. Workers never emit
the public signals themselves: they hand a callable to the UI thread (``UiThreadPost``), which runs
one of this controller's ``on_*`` methods to update the state and emit, so every slot connected
to this controller runs on the UI thread whatever kind of callable it is.

If the engine process ends on its own (a crash, the OOM killer, ``kill -9``), the worker notices
even when no call is in flight, and ``engine_died`` says how it ended; ``restart()`` starts a
fresh engine and loads the last model again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from app import paths
from app.engine.client import EngineClient
from app.engine.protocol import (
    BuildInfo,
    ChatParams,
    ChatResult,
    EngineStats,
    LoadParams,
    LoadResult,
    RoutingSnapshot,
)
from app.ui.engine_state import EngineState
from app.ui.engine_worker import ChatJob, EngineJob, EngineWorker, JobOutcome

if TYPE_CHECKING:
    from app.load_plan import LoadPlan
from app.ui.background import UiThreadPost


class EngineController(QObject):
    """Start, load, chat, unload, restart the engine without ever blocking the UI thread."""

    state_changed = Signal(object)  # EngineState
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


    def __init__(self, parent: QObject | None = None, *, log_path: Path | None = None,
                 stats_interval_s: float = 0.25) -> None:
        super().__init__(parent)
        # after shutdown() nothing more is delivered: the pages may be gone
        self._ui = UiThreadPost(self, still_wanted=lambda: self.state != EngineState.SHUT_DOWN)
        self._worker = EngineWorker(self, self._ui.post,
                                    log_path=log_path or paths.cache_dir() / "engine.log",
                                    stats_interval_s=stats_interval_s)
        self._reported_deaths: set[int] = set()
        self._chat_ids = itertools.count(1)
        self._chats: dict[int, ChatJob] = {}
        self.state = EngineState.STOPPED
        self.last_build_info: BuildInfo | None = None
        self.loaded: LoadResult | None = None  # the model loaded now
        self.last_load: LoadParams | None = None  # what restart() loads again
        self.last_plan: LoadPlan | None = None  # the plan behind last_load, when it had one
        self.last_stats: EngineStats | None = None
        self.last_death: tuple[str, str] | None = None

    @property
    def client(self) -> EngineClient | None:
        """The current engine client (its ``process.popen.pid`` is the engine's pid)."""
        return self._worker.client

    @property
    def log_path(self) -> Path:
        """Where the engine writes its log."""
        return self._worker.log_path

    # --- what the UI calls (all return at once) -------------------------------------------

    def start(self) -> None:
        """Start an engine process if none is running."""
        if self.state.can_start:
            self._set_state(EngineState.STARTING)
            self._worker.start()

    def load(self, params: LoadParams, plan: LoadPlan | None = None) -> None:
        """Load a model (starting the engine first if needed); replaces any loaded model.
        ``plan``: how its placement was chosen, kept with it for the pages (AppState.loaded)."""
        self.last_load, self.last_plan = params, plan
        self._worker.load(params)

    def unload(self) -> None:
        """Unload the model; the engine keeps running."""
        self.last_load = self.last_plan = None
        self._worker.unload()

    def chat(self, params: ChatParams) -> int:
        """Start an answer; its tokens, result or error arrive tagged with the returned id."""
        job = ChatJob(next(self._chat_ids))
        self._chats[job.chat_id] = job
        self._worker.chat(job, params)
        return job.chat_id

    def stop_chat(self, chat_id: int) -> None:
        """Stop an answer: it ends with ``chat_finished`` (finish_reason "cancelled")."""
        job = self._chats.get(chat_id)
        if job is None:
            return
        job.cancelled = True  # a job not yet started sees this and does not start
        if job.stream is not None:
            self._worker.cancel(job.stream)

    def run_engine_job(self, job: EngineJob, on_done: Callable[[Any], None],
                       on_error: Callable[[str, str], None], state: EngineState = EngineState.TUNING) -> None:
        """Run ``job(client)`` on the engine worker, in turn with loads and chats: work that
        drives the engine itself (autotune, benchmarks). The job may load models; it returns
        its result and the model it leaves loaded (None: none), which becomes the loaded one.
        ``on_done(result)`` or ``on_error(message, hint)`` run on the UI thread."""
        self._worker.run_job(job, on_done, on_error, state)

    def restart(self) -> None:
        """Stop the engine (if it still runs) and start a fresh one; the last model is
        loaded again. The one-click answer to ``engine_died``."""
        for chat_id in list(self._chats):
            self.stop_chat(chat_id)
        self._set_state(EngineState.STARTING)
        self._worker.restart(lambda: self.last_load)

    def shutdown(self) -> None:
        """Stop the engine at application exit. This one call may block for up to a few
        seconds (the engine exits as soon as its stdin closes)."""
        for chat_id in list(self._chats):
            self.stop_chat(chat_id)
        self._worker.shutdown()
        self.state = EngineState.SHUT_DOWN  # nothing more is delivered

    # --- back on the UI thread ------------------------------------------------------------

    def _set_state(self, state: EngineState) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    # What the worker reports (EngineEvents), each delivered here on the UI thread.

    def on_state(self, state: EngineState) -> None:
        self._set_state(state)

    def on_started(self, info: BuildInfo) -> None:
        self.last_build_info = info
        self.last_death = None
        self.build_info.emit(info)
        self._set_state(EngineState.IDLE)

    def on_load_progress(self, fraction: float) -> None:
        self.load_progress.emit(fraction)

    def on_loaded(self, result: LoadResult) -> None:
        self.loaded = result
        self._set_state(EngineState.IDLE)
        self.model_loaded.emit(result)

    def on_load_failed(self, message: str, hint: str) -> None:
        self.loaded = None  # the engine dropped the previous model before trying
        self._set_state(EngineState.IDLE)
        self.load_failed.emit(message, hint)

    def on_unloaded(self) -> None:
        self.loaded = None
        self._set_state(EngineState.IDLE)
        self.model_unloaded.emit()

    def on_job_done(self, on_done: Callable[[Any], None], outcome: JobOutcome) -> None:
        self.loaded = outcome.loaded
        if outcome.loaded is not None and outcome.load is not None:
            self.last_load = outcome.load  # a restart loads what the job loaded
            self.last_plan = None  # measured, not planned
        self._set_state(EngineState.IDLE)
        if outcome.loaded is not None:
            self.model_loaded.emit(outcome.loaded)
        else:
            self.model_unloaded.emit()
        on_done(outcome.result)

    def on_job_failed(self, on_error: Callable[[str, str], None], message: str, hint: str) -> None:
        self.loaded = None  # what the job left loaded is unknown: load again to chat
        self._set_state(EngineState.IDLE)
        self.model_unloaded.emit()
        on_error(message, hint)

    def on_chat_token(self, chat_id: int, text: str) -> None:
        self.chat_token.emit(chat_id, text)

    def on_chat_finished(self, chat_id: int, result: ChatResult) -> None:
        self._chats.pop(chat_id, None)
        if self.state == EngineState.GENERATING:
            self._set_state(EngineState.IDLE)
        self.chat_finished.emit(chat_id, result)

    def on_chat_failed(self, chat_id: int, message: str, hint: str) -> None:
        self._chats.pop(chat_id, None)
        if self.state == EngineState.GENERATING:
            self._set_state(EngineState.IDLE)
        self.chat_failed.emit(chat_id, message, hint)

    def on_stats(self, session: int, stats: EngineStats) -> None:
        if session == self._worker.session and self.state != EngineState.DIED:
            self.last_stats = stats
            self.stats.emit(stats)

    def on_routing(self, session: int, snapshot: RoutingSnapshot) -> None:
        if session == self._worker.session and self.state != EngineState.DIED:
            self.routing.emit(snapshot)

    def on_died(self, session: int, message: str, hint: str) -> None:
        if session in self._reported_deaths or self._worker.stopped_on_purpose(session):
            return
        self._reported_deaths.add(session)
        self.loaded = None
        self.last_death = (message, hint)
        self._set_state(EngineState.DIED)
        self.engine_died.emit(message, hint)
