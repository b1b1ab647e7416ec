"""The engine process as the desktop app sees it: one state at a time, told by
EngineController.state_changed."""

from __future__ import annotations

import enum


class EngineState(str, enum.Enum):
    """A str enum: its values are the words the engine status and the logs use."""

    STOPPED = "stopped"  # not started yet, or stopped by the user
    STARTING = "starting"  # the process is starting (first start, or a restart)
    IDLE = "idle"  # running; a model may be loaded
    LOADING = "loading"
    GENERATING = "generating"
    TUNING = "tuning"  # autotune or a benchmark drives the engine
    DIED = "died"  # ended on its own (a crash, the OOM killer); restart() brings it back
    SHUT_DOWN = "shut down"  # the app is closing: nothing more is delivered

    @property
    def can_start(self) -> bool:
        """No engine process runs, and one may be started."""
        return self in (EngineState.STOPPED, EngineState.DIED)

    @property
    def coming_up(self) -> bool:
        """A model is on its way (the engine starting, or a model loading)."""
        return self in (EngineState.STARTING, EngineState.LOADING)

    @property
    def client_gone(self) -> bool:
        """The engine client in use is closing or closed (a server built on it must stop)."""
        return self in (EngineState.STARTING, EngineState.STOPPED, EngineState.DIED,
                        EngineState.SHUT_DOWN)
