"""What the desktop app's pages share, found once: this machine's hardware, its RAM speed, and
the engine build's facts. Qt-light (a QObject for its signals): pages take it and connect
themselves; it knows nothing of pages.

The hardware is detected and the RAM probed once, on workers, when the window starts; a page
built later gets the values at once (``connect_hardware`` and friends call back with what is
known, then with every change).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from app.engine.protocol import BuildInfo
from app.hardware import Hardware, detect
from app.hardware.bandwidth import RamBandwidth, ram_bandwidth
from app.ui.widgets.background import run_in_background

log = logging.getLogger("moedesk.ui")


class AppState(QObject):
    hardware_changed = Signal(object)  # Hardware
    ram_changed = Signal(object)  # RamBandwidth
    build_changed = Signal(object)  # BuildInfo

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.hardware: Hardware | None = None
        self.ram: RamBandwidth | None = None
        self.build: BuildInfo | None = None
        self._detecting = False

    def detect(self) -> None:
        """Detect the hardware and probe the RAM, on workers, once (later calls do nothing)."""
        if self._detecting:
            return
        self._detecting = True
        run_in_background(detect, self.set_hardware,
                          lambda exc: log.warning("hardware detection failed: %s", exc), owner=self)
        # a probe that fails leaves the speed model's typical figures, which it notes
        run_in_background(ram_bandwidth, self.set_ram,
                          lambda exc: log.warning("RAM probe failed: %s", exc), owner=self)

    def set_hardware(self, hardware: Hardware) -> None:
        self.hardware = hardware
        self.hardware_changed.emit(hardware)

    def set_ram(self, ram: RamBandwidth) -> None:
        self.ram = ram
        self.ram_changed.emit(ram)

    def set_build(self, build: BuildInfo) -> None:
        self.build = build
        self.build_changed.emit(build)

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
