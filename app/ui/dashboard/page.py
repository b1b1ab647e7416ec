"""The Dashboard page: live plots of what the engine is doing, and the placement in use.

The page takes the app state (the loaded model and its plan) and the EngineController, and
connects itself to them. Data comes in through the slots (``add_stats``, ``add_routing``,
``set_loaded``, ``add_chat_result``; a recorded run may call them too), which only append to
ring buffers; a timer redraws the plots at
``REDRAW_HZ`` (nothing is drawn per event, however fast events come). Another timer samples
this machine's CPU load. Pause freezes what is drawn but keeps collecting, so Resume (and the
CSV export) shows everything that happened meanwhile.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
from PySide6.QtCore import QEvent, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.engine.protocol import ChatResult, EngineStats, LoadResult, RoutingSnapshot
from app.ui.app_state import AppState, LoadedModel
from app.ui.dashboard.now import now_lines, plan_words, storage_lines  # noqa: F401 (storage_lines: still imported from here)
from app.ui.dashboard.placement_view import PlacementTableModel, placement_summary
from app.ui.dashboard.plots import DashboardPlots, memory_series
from app.ui.dashboard.series import RoutingWindow, SeriesStore
from app.ui.engine_controller import EngineController
from app.ui.widgets.empty_state import EmptyState
from app.ui.widgets.look import PageHeader, page_layout, tighten

REDRAW_HZ = 5
CPU_SAMPLE_S = 1.0
HISTORY_SAMPLES = 4 * 60 * 60  # per series: an hour of the engine's default 4 pushes a second
WINDOWS_S = (10, 30, 60, 120)  # heatmap windows; bins of the longest are kept (~11 MB at 94x128)


class DashboardPage(QWidget):
    """Live engine performance: throughput, memory, CPU, expert hit rate, routing heatmap."""

    exported = Signal(str)  # path of a CSV or PNG file just written
    page_requested = Signal(str)  # the user asked for another page ("Models": to load a model)

    def __init__(self, state: AppState, engine: EngineController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = SeriesStore(HISTORY_SAMPLES)
        self.routing = RoutingWindow(window_s=30.0, max_window_s=max(WINDOWS_S))
        self.redraws = 0  # how many times the plots were given new data
        self._origin = time.monotonic()
        self._dirty = True
        self._paused = False
        self._last_stats: EngineStats | None = None
        self._last_answer: ChatResult | None = None
        self._loaded: LoadResult | None = None
        self._had_model = False  # a model was loaded since the last reset: its plots are worth showing

        self.plots = DashboardPlots(self)
        self.placement = PlacementTableModel(self)
        self._build()

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(1000 // REDRAW_HZ)
        self._redraw_timer.timeout.connect(self._on_redraw_timer)
        self._redraw_timer.start()
        psutil.cpu_percent(None)  # the first call only starts psutil's measuring interval
        self._cpu_timer = QTimer(self)
        self._cpu_timer.setInterval(int(CPU_SAMPLE_S * 1000))
        self._cpu_timer.timeout.connect(lambda: self.add_cpu_sample(psutil.cpu_percent(None)))
        self._cpu_timer.start()

        engine.stats.connect(self.add_stats)
        engine.routing.connect(self.add_routing)
        engine.chat_finished.connect(self._answer_finished)
        state.connect_loaded(self._loaded_changed)

    def _build(self) -> None:
        self.pause_button = QPushButton("Pause", self)
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Freeze the plots; data keeps being collected.")
        self.pause_button.toggled.connect(self.set_paused)
        self.reset_button = QPushButton("Reset", self)
        self.reset_button.setToolTip("Clear every plot and start the series again.")
        self.reset_button.clicked.connect(self.reset)
        self.window_choice = QComboBox(self)
        for seconds in WINDOWS_S:
            self.window_choice.addItem(f"last {seconds} s", seconds)
        self.window_choice.setCurrentIndex(WINDOWS_S.index(30))
        self.window_choice.setToolTip("How much recent routing the heatmap sums.")
        self.window_choice.currentIndexChanged.connect(
            lambda i: self.set_routing_window(self.window_choice.itemData(i)))
        csv_button = QPushButton("Export CSV…", self)
        csv_button.clicked.connect(self._ask_export_csv)
        png_button = QPushButton("Export PNG…", self)
        png_button.clicked.connect(self._ask_export_png)
        report_button = QPushButton("Benchmark report…", self)
        report_button.setToolTip("Show a report written by 'moedesk-cli bench' (its report.csv)")
        report_button.clicked.connect(self._ask_open_report)
        self.paused_label = QLabel("Paused: still collecting", self)
        self.paused_label.setVisible(False)

        bar = tighten(QHBoxLayout())
        bar.addWidget(self.pause_button)
        bar.addWidget(self.reset_button)
        bar.addWidget(self.paused_label)
        bar.addStretch(1)
        bar.addWidget(QLabel("Heatmap:", self))
        bar.addWidget(self.window_choice)
        bar.addWidget(csv_button)
        bar.addWidget(png_button)
        bar.addWidget(report_button)

        self.now_label = QLabel(self)
        self.now_label.setTextFormat(Qt.TextFormat.PlainText)
        self.now_label.setWordWrap(True)
        self.now_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        now_box = QGroupBox("Now", self)
        QVBoxLayout(now_box).addWidget(self.now_label)

        self.placement_label = QLabel("No model loaded.", self)
        self.placement_label.setWordWrap(True)
        self.placement_table = QTableView(self)
        self.placement_table.setModel(self.placement)
        self.placement_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.placement_table.verticalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        placement_box = QGroupBox("Placement in use", self)
        placement_layout = QVBoxLayout(placement_box)
        placement_layout.addWidget(self.placement_label)
        placement_layout.addWidget(self.placement_table)
        self.placement_table.setSizeAdjustPolicy(QTableView.SizeAdjustPolicy.AdjustToContents)

        side = QWidget(self)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(now_box)
        side_layout.addWidget(placement_box)
        side_layout.addStretch(1)
        # scrolls rather than taking width from the plots in a small window
        side_scroll = QScrollArea(self)
        side_scroll.setWidget(side)
        side_scroll.setWidgetResizable(True)
        side_scroll.setFrameShape(QFrame.Shape.NoFrame)
        side_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.plots)
        splitter.addWidget(side_scroll)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)

        self.empty = EmptyState(
            "dashboard", "No model loaded",
            "Load a model and chat with it: its speed, the memory it takes, the CPU load and which "
            "experts each layer routes to are drawn here as it runs.", "Open Models")
        self.empty.action_clicked.connect(lambda: self.page_requested.emit("Models"))
        self.live = QWidget(self)  # the controls and the plots, once there is something to plot
        live_layout = tighten(QVBoxLayout(self.live))
        live_layout.addLayout(bar)
        live_layout.addWidget(splitter, 1)
        self.body = QStackedWidget(self)
        self.body.addWidget(self.live)
        self.body.addWidget(self.empty)
        self.header = PageHeader("Dashboard", "What the engine does now: speed, memory and expert "
                                              "routing, live.", self)
        layout = page_layout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.body, 1)
        self._show_now()
        self._show_body()

    # --- data in (cheap: append, mark dirty) ----------------------------------------------

    def _time(self, at: float | None) -> float:
        """Seconds since the page's origin; ``at`` is a time.monotonic() value (recorded
        data), else now."""
        return (time.monotonic() if at is None else at) - self._origin

    @Slot(object)
    def add_stats(self, stats: EngineStats, at: float | None = None) -> None:
        """An engine stats push. Speeds are plotted while the engine generates; when it is
        idle its figures are those of the last answer, already marked by add_chat_result."""
        generating = stats.state == "generating"
        values = {
            "decode_tps": stats.decode_tps if generating else math.nan,
            "prefill_tps": stats.prefill_tps if generating else math.nan,
            "tokens_generated": float(stats.tokens_generated),
            "engine_rss_bytes": float(stats.rss),
        }
        for memory in stats.memory:
            values[memory_series(memory.device)] = float(memory.used)
        if stats.storage is not None:
            values["ssd_read_bps"] = stats.storage.read_bps
            values["ssd_bytes_per_token"] = stats.storage.bytes_per_token
        self.store.add(self._time(at), values)
        self._last_stats = stats
        self._dirty = True

    @Slot(object)
    def add_routing(self, snapshot: RoutingSnapshot, at: float | None = None) -> None:
        """A cumulative routing snapshot: its difference from the last one feeds the heatmap."""
        t = self._time(at)
        self.routing.add(t, snapshot)
        window_hit = self.routing.hit_rate()
        self.store.add(t, {
            "hit_rate": math.nan if snapshot.hit_rate is None else snapshot.hit_rate,
            "hit_rate_window": math.nan if window_hit is None else window_hit,
            "routed_tokens": float(snapshot.tokens),
        })
        self._dirty = True

    @Slot(object)
    def set_loaded(self, result: LoadResult | None, plan_text: str = "") -> None:
        """A model was loaded (routing counts restart at zero) or unloaded (None); ``plan_text``
        says how its placement was chosen."""
        self._loaded = result
        self._had_model = self._had_model or result is not None
        self.placement.set_result(result)
        summary = placement_summary(result) if result else "No model loaded."
        self.placement_label.setText("\n\n".join(t for t in (summary, plan_text) if t))
        self.routing.restart(from_zero=result is not None)
        self._dirty = True
        self._show_body()

    def _loaded_changed(self, loaded: LoadedModel | None) -> None:
        self.set_loaded(loaded.result if loaded else None, plan_words(loaded) if loaded else "")

    def _answer_finished(self, _chat_id: int, result: ChatResult) -> None:
        self.add_chat_result(result)

    def _show_body(self) -> None:
        """The plots once a model was loaded; before, what to do to get some."""
        self.body.setCurrentWidget(self.live if self._had_model else self.empty)

    @Slot(object)
    def add_chat_result(self, result: ChatResult, at: float | None = None) -> None:
        """A finished answer: its final speeds are marked on the throughput plot."""
        values = {
            "answer_prefill_tps": result.prefill_tps,
            "answer_tokens": float(result.completion_tokens),
            "answer_ttft_s": result.first_token_s,
        }
        if result.decode_tps > 0:  # a one-token answer decoded nothing: no marker at 0 t/s
            values["answer_decode_tps"] = result.decode_tps
        self.store.add(self._time(at), values)
        self._last_answer = result
        self._dirty = True

    @Slot(float)
    def add_cpu_sample(self, percent: float, at: float | None = None) -> None:
        """This machine's CPU load, all cores (the page's own timer calls it every second)."""
        self.store.add(self._time(at), {"cpu_percent": percent})
        self._dirty = True

    # --- controls -------------------------------------------------------------------------

    @Slot()
    def reset(self) -> None:
        """Clear every series and the routing window, and restart the time axis. The
        placement stays: it describes the model still loaded."""
        self.store.clear()
        self.routing.restart(from_zero=False)
        self.restart_clock()
        self._last_stats = self._last_answer = None
        self._had_model = self._loaded is not None
        self._show_body()
        self._dirty = True
        self.redraw()  # even while paused: the user asked to see the plots cleared

    def restart_clock(self, at: float | None = None) -> None:
        """Make ``at`` (a time.monotonic() value; default now) time 0 of the plots."""
        self._origin = time.monotonic() if at is None else at

    @Slot(bool)
    def set_paused(self, paused: bool) -> None:
        self._paused = paused
        self.pause_button.setChecked(paused)
        self.pause_button.setText("Resume" if paused else "Pause")
        self.paused_label.setVisible(paused)
        if not paused:
            self.redraw()

    @property
    def paused(self) -> bool:
        return self._paused

    def set_routing_window(self, seconds: float) -> None:
        """Sum the heatmap over the last ``seconds`` (at most the longest choice)."""
        self.routing.window_s = float(seconds)
        index = self.window_choice.findData(seconds)
        if index >= 0 and index != self.window_choice.currentIndex():
            self.window_choice.setCurrentIndex(index)
        self._dirty = True

    # --- drawing --------------------------------------------------------------------------

    def _on_redraw_timer(self) -> None:
        if self._dirty and not self._paused:
            self.redraw()

    def redraw(self) -> None:
        """Give the plots the current data (the timer calls this; so may a test)."""
        layer_hit_rate, recent = self.routing.shown_layer_hit_rate()
        self.plots.redraw(self.store, self.routing.counts(), self.routing.layers, layer_hit_rate,
                          self.routing.window_s, self.routing.cached, layers_recent=recent)
        self._show_now()
        self._dirty = False
        self.redraws += 1

    def heatmap_counts(self) -> np.ndarray:
        """The routing counts the heatmap shows now, [layer, expert]."""
        image = self.plots.heatmap.image
        return np.zeros((0, 0), dtype=np.int64) if image is None else np.asarray(image)

    def _show_now(self) -> None:
        hit = self.store.last("hit_rate")
        window_hit = self.routing.hit_rate()
        self.now_label.setText("\n".join(now_lines(
            self._last_stats, self.store.last("cpu_percent"), hit, window_hit, self.routing.window_s,
            self._last_answer)))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.PaletteChange:
            self.plots.apply_palette(self.palette())
        super().changeEvent(event)

    # --- export ---------------------------------------------------------------------------

    def export_csv(self, path: str | Path) -> int:
        """Write every series to one CSV file (time_s, then a column per series); returns
        the number of rows. The file appears whole or not at all."""
        rows = self.store.write_csv(path)
        self.exported.emit(str(path))
        return rows

    def export_png(self, path: str | Path) -> None:
        """Save the plots as they are drawn now as a PNG image (written whole or not at all)."""
        path = Path(path)
        image = self.plots.grab()
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            if not image.save(temp, "PNG"):
                raise OSError(f"could not write a PNG image to {path.parent}")
            os.replace(temp, path)
        finally:
            Path(temp).unlink(missing_ok=True)
        self.exported.emit(str(path))

    def _ask_export_csv(self) -> None:
        self._ask_export("Export the series as CSV", "moedesk-dashboard.csv",
                         "CSV files (*.csv)", self.export_csv)

    def _ask_export_png(self) -> None:
        self._ask_export("Export the plots as PNG", "moedesk-dashboard.png",
                         "PNG images (*.png)", self.export_png)

    def _ask_export(self, title: str, name: str, filter_: str,
                    write: Callable[[str], object]) -> None:
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path.home() / name), filter_)
        if not path:
            return
        try:
            write(path)
        except OSError as exc:
            QMessageBox.warning(self, title, f"The file was not written: {exc.strerror or exc}."
                                "\n\nChoose a folder you can write to, with free space.")

    def _ask_open_report(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a benchmark report", "", "report.csv (*.csv)")
        if path:
            self.open_report(Path(path))

    def open_report(self, csv_path: Path) -> QDialog | None:
        """Show a ``moedesk-cli bench`` report (chart and table); a wrong file is explained."""
        from app.ui.tune.report_dialog import BenchReportDialog, ReportError

        try:
            dialog = BenchReportDialog(csv_path, self)
        except ReportError as exc:
            QMessageBox.warning(self, "Not a benchmark report", str(exc))
            return None
        dialog.show()
        return dialog
