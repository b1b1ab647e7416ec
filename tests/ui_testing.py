"""Shared by the desktop app's tests: the app state and the EngineController as the main window
makes them (the state following the controller), for a page built on its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.hardware import Hardware
from app.ui.app_state import AppState
from app.ui.engine_controller import EngineController


@contextmanager
def app_parts(hardware: Hardware | None = None, log_path: Path | None = None,
              ) -> Iterator[tuple[AppState, EngineController]]:
    """An app state (with ``hardware`` as this machine's, when given) following a controller
    whose engine starts when a page first asks it for something; shut down at the end."""
    controller = EngineController(log_path=log_path)
    state = AppState()
    state.follow(controller)
    if hardware is not None:
        state.set_hardware(hardware)
    try:
        yield state, controller
    finally:
        controller.shutdown()
