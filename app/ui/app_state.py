"""What the desktop app's pages share, found once: this machine's hardware, its RAM speed, the
engine build's facts, and the model loaded now with the plan it was loaded by. Qt-light (a
QObject for its signals): pages take it and connect themselves; it knows nothing of pages.

The hardware is detected and the RAM probed once, on workers, when the window starts. The
loaded model follows the EngineController (``follow``): set when a load succeeds, cleared when
the model is unloaded, a load fails (the engine dropped the old model first) or the engine dies.
A page built later gets what is known at once: ``connect_hardware`` and friends call back with
the value now, then with every change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from app.engine.protocol import BuildInfo, LoadParams, LoadResult
from app.hardware import Hardware, detect
from app.hardware.bandwidth import RamBandwidth, ram_bandwidth
from app.ui.background import Tasks

if TYPE_CHECKING:
    from app.load_plan import LoadPlan
    from app.ui.engine_controller import EngineController

log = logging.getLogger("moedesk.ui")


@dataclass(frozen=True)
class LoadedModel:
    """The model the engine holds, what it was asked to load, and the plan behind that."""

    result: LoadResult  # the engine's word: the model, where its tensors landed, the context
    params: LoadParams  # the load it came from (a restart loads it again)
    # how its placement was chosen: the advisor's plan (verdict, predicted speed) and whether
    # autotune's placement replaced the plan's; None when none was made (autotune's winner)
    plan: LoadPlan | None = None

    @property
    def path(self) -> Path:
        """The model file it was loaded from (the first shard of a split model)."""
        return Path(self.params.model)


class AppState(QObject):
    hardware_changed = Signal(object)  # Hardware
    ram_changed = Signal(object)  # RamBandwidth
    build_changed = Signal(object)  # BuildInfo
    loaded_changed = Signal(object)  # LoadedModel, or None when no model is loaded

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.hardware: Hardware | None = None
        self.ram: RamBandwidth | None = None
        self.build: BuildInfo | None = None
        self.loaded: LoadedModel | None = None
        self._engine: EngineController | None = None
        self._tasks = Tasks(self)
        self._detecting = False

    def detect(self) -> None:
        """Detect the hardware and probe the RAM, on workers, once (later calls do nothing)."""
        if self._detecting:
            return
        self._detecting = True
        self._tasks.run(detect, self.set_hardware,
                        lambda exc: log.warning("hardware detection failed: %s", exc))
        # a probe that fails leaves the speed model's typical figures, which it notes
        self._tasks.run(ram_bandwidth, self.set_ram, lambda exc: log.warning("RAM probe failed: %s", exc))

    def follow(self, engine: EngineController) -> None:
        """Keep the build and the loaded model as ``engine`` reports them."""
        self._engine = engine
        engine.build_info.connect(self.set_build)
        engine.model_loaded.connect(self._engine_loaded)
        engine.model_unloaded.connect(self._engine_let_go)
        engine.load_failed.connect(self._engine_let_go)
        engine.engine_died.connect(self._engine_let_go)

    # --- setters (the workers' answers, the engine's reports; tests set recorded values) ---

    def set_hardware(self, hardware: Hardware) -> None:
        self.hardware = hardware
        self.hardware_changed.emit(hardware)

    def set_ram(self, ram: RamBandwidth) -> None:
        self.ram = ram
        self.ram_changed.emit(ram)

    def set_build(self, build: BuildInfo) -> None:
        self.build = build
        self.build_changed.emit(build)

    def set_loaded(self, loaded: LoadedModel | None) -> None:
        if loaded is None and self.loaded is None:
            return
        self.loaded = loaded
        self.loaded_changed.emit(loaded)

    def _engine_loaded(self, result: LoadResult) -> None:
        engine = self._engine
        assert engine is not None
        # the controller keeps what it loaded last and its plan: what a restart loads again
        params = engine.last_load or LoadParams(model=result.model.path)
        self.set_loaded(LoadedModel(result, params, engine.last_plan))

    def _engine_let_go(self, *_why: object) -> None:
        self.set_loaded(None)

    # --- a page's way in: the value now, then every change -------------------------------

    def connect_hardware(self, slot: Callable[[Hardware], None]) -> None:
        """``slot`` with the hardware now (if known) and whenever it changes."""
        self.hardware_changed.connect(slot)
        if self.hardware is not None:
            slot(self.hardware)

    def connect_ram(self, slot: Callable[[RamBandwidth], None]) -> None:
        self.ram_changed.connect(slot)
        if self.ram is not None:
            slot(self.ram)

    def connect_build(self, slot: Callable[[BuildInfo], None]) -> None:
        self.build_changed.connect(slot)
        if self.build is not None:
            slot(self.build)

    def connect_loaded(self, slot: Callable[[LoadedModel | None], None]) -> None:
        """``slot`` with the loaded model now (None: none) and whenever it changes."""
        self.loaded_changed.connect(slot)
        slot(self.loaded)
