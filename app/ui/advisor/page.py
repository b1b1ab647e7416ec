"""The Advisor page: this machine, the plan for the selected model, and the controls to change it.

Data comes in through set_hardware, set_build_info and set_model (and the RAM probe, which the
page runs on a worker); what the user wants goes out through ``load_requested``. The engine's
answers come back through show_load_progress, show_loaded and show_load_failed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.advisor.memory import RAM_HEADROOM, VRAM_HEADROOM
from app.advisor.planner import Plan, evaluate, plan_for
from app.engine.placement import PlacementPlan
from app.engine.protocol import BuildInfo, LoadParams, LoadResult
from app.engine.routing_profiles import remembered_for
from app.gguf_info import GGUFModel, read_model
from app.hardware import Hardware, detect
from app.hardware.bandwidth import RamBandwidth, ram_bandwidth
from app.hardware.disk import DiskSpeed
from app.load_plan import autotuned, model_disk_speed
from app.ui.advisor.controls import PlanControls, RuleError, base_placement, manual_placement
from app.ui.advisor.memory_table import MemoryRow, MemoryTableModel
from app.ui.app_state import AppState
from app.ui.tune.panel import TunePanel, TuneRequest
from app.ui.widgets.background import run_in_background
from app.units import gib

_OK, _WARN = QStyle.StandardPixmap.SP_DialogApplyButton, QStyle.StandardPixmap.SP_MessageBoxWarning
VERDICTS = {
    "fits_on_gpu": ("Fits on the GPU", _OK),
    "fits_with_expert_offload": ("Fits, with routed experts in RAM", _OK),
    "fits_in_ram": ("Fits in RAM (runs on the CPU)", _OK),
    "fits_streaming_from_ssd": ("Runs, reading weights from the SSD (slow)", _WARN),
    "does_not_fit": ("Does not fit", QStyle.StandardPixmap.SP_MessageBoxCritical),
}
DEFAULT_CONTEXT = 8192


def wrapped(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class AdvisorPage(QWidget):
    """Will the model fit, how fast will it run, and how to split it; Load loads that plan."""

    load_requested = Signal(object)  # LoadParams built from the plan the user settled on
    tune_requested = Signal(object)  # TuneRequest: autotune, starting from the plan on screen

    def __init__(self, parent: QWidget | None = None, *, hardware: Hardware | None = None,
                 build: BuildInfo | None = None, ram: RamBandwidth | None = None,
                 measure: bool = True, n_ctx: int = DEFAULT_CONTEXT,
                 state: AppState | None = None) -> None:
        """``state``: the app's shared hardware, RAM speed and build, which the page follows
        (the desktop app's way). Without it, ``measure`` runs the RAM probe (and detects the
        hardware when none is given) on a worker; off for recorded machines, whose speed this
        machine's probe would not say."""
        super().__init__(parent)
        self.hardware, self.build, self.ram = hardware, build, ram
        self.disk: DiskSpeed | None = None  # the model's drive, probed when it must stream
        self.tuned: PlacementPlan | None = None  # autotune's winner for this model and context
        self.profile: list[list[int]] | None = None  # routing remembered for the model
        self._measure = measure
        self._disk_probing = False
        self.path: Path | None = None
        self.model: GGUFModel | None = None
        self.planned: Plan | None = None  # the planner's latest choice
        self.plan: Plan | None = None  # what is shown: the planner's, or the user's placement
        self.loading = False
        self._n_ctx = n_ctx
        self._build_ui()
        if state is not None:
            state.connect_hardware(self.set_hardware)
            state.connect_ram(self.set_ram)
            state.connect_build(self.set_build_info)
            measure = False  # the state measures, once for the whole app
        if measure and ram is None:  # a probe that fails leaves the typical figures, noted
            run_in_background(ram_bandwidth, self._alive(self.set_ram), lambda exc: None)
        if measure and hardware is None:
            run_in_background(detect, self._alive(self.set_hardware), lambda exc: None)
        self._refresh()

    def _alive(self, slot: Callable[[Any], None]) -> Callable[[Any], None]:
        """``slot``, skipped when a worker answers after the page was closed and deleted."""
        return lambda value: slot(value) if shiboken6.isValid(self) else None

    # --- the contract -----------------------------------------------------------------------

    def set_hardware(self, hardware: Hardware) -> None:
        self.hardware = hardware
        self._refresh()

    def set_build_info(self, build: BuildInfo) -> None:
        """What the llama.cpp build can drive: the plan uses only those GPUs."""
        self.build = build
        self._refresh()

    def set_ram(self, ram: RamBandwidth) -> None:
        """The RAM probe's figures, for the speed prediction."""
        self.ram = ram
        self._refresh()

    def set_model(self, path: Path) -> None:
        """Plan for the model at ``path`` (its header is read on a worker)."""
        self.path = Path(path)
        self.model, self.planned, self.plan = None, None, None
        self.model_label.setText(f"Reading {self.path.name}…")
        self._refresh()
        path = self.path
        # a header read that ends after the user picked another model is dropped
        run_in_background(lambda: read_model(path),
                          self._alive(lambda model: self._model_read(model) if self.path == path else None),
                          self._alive(lambda exc: self._model_failed(exc) if self.path == path else None))

    def show_load_progress(self, fraction: float) -> None:
        self.loading = True
        self.progress.show()
        self.progress.setValue(int(fraction * 100))
        self.status.setText(f"Loading… {fraction:.0%}")
        self._update_load_button()

    def show_loaded(self, result: LoadResult) -> None:
        self.loading = False
        self.progress.hide()
        experts: dict[str, int] = {}
        for p in result.placement:
            if p.tensor_class == "routed_experts":
                experts[p.device] = experts.get(p.device, 0) + p.bytes
        where = ", ".join(f"{device} {gib(n)}" for device, n in experts.items())
        self.status.setText(f"Loaded {result.model.name} in {result.load_seconds:.1f} s, context "
                            f"{result.n_ctx:,}" + (f"; routed experts: {where}" if where else ""))
        self._update_load_button()

    def show_load_failed(self, message: str, hint: str) -> None:
        self.loading = False
        self.progress.hide()
        self.status.setText(f"The model did not load: {message}" + (f"\n{hint}" if hint else ""))
        self._update_load_button()

    # --- building -----------------------------------------------------------------------------

    def _build_ui(self) -> None:
        self.model_label = wrapped("No model selected: pick one on the Models page.")
        bold = self.model_label.font()
        bold.setBold(True)
        self.model_label.setFont(bold)
        self.verdict_icon = QLabel()
        self.verdict = QLabel()
        big = self.verdict.font()
        big.setPointSizeF(big.pointSizeF() * 1.4)
        big.setBold(True)
        self.verdict.setFont(big)
        self.reasons = wrapped()
        self.speed = wrapped()
        speed_font = self.speed.font()
        speed_font.setBold(True)
        self.speed.setFont(speed_font)
        self.speed_detail = wrapped()
        self.placement_label = wrapped()
        self.table_model = MemoryTableModel()
        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.verticalHeader().hide()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.hardware_label = wrapped()
        self.controls = PlanControls()
        self.load_button = QPushButton("Load with this plan")
        self.progress = QProgressBar()
        self.progress.hide()
        self.status = wrapped()
        self.tune_panel = TunePanel()

        verdict_row = QHBoxLayout()
        verdict_row.addWidget(self.verdict_icon)
        verdict_row.addWidget(self.verdict, 1)
        plan_box = QGroupBox("Plan")
        plan_layout = QVBoxLayout(plan_box)
        plan_layout.addLayout(verdict_row)
        plan_layout.addWidget(self.speed)
        plan_layout.addWidget(self.reasons)
        plan_layout.addWidget(self.table)
        plan_layout.addWidget(self.speed_detail)
        plan_layout.addWidget(self.placement_label)
        plan_layout.addStretch(1)
        machine_box = QGroupBox("This machine")
        QVBoxLayout(machine_box).addWidget(self.hardware_label)
        load_row = QHBoxLayout()
        load_row.addWidget(self.progress, 1)
        load_row.addWidget(self.load_button)
        right = QVBoxLayout()
        right.addWidget(machine_box)
        right.addWidget(self.controls)
        right.addLayout(load_row)
        right.addWidget(self.status)
        right.addWidget(self.tune_panel)
        right.addStretch(1)
        columns = QHBoxLayout()
        columns.addWidget(plan_box, 3)
        columns.addLayout(right, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_label)
        layout.addLayout(columns, 1)

        self.controls.changed.connect(self._refresh)
        self.load_button.clicked.connect(self._load)
        self.tune_panel.tune_requested.connect(self._tune)

    # --- behaviour ----------------------------------------------------------------------------

    def _model_read(self, model: GGUFModel) -> None:
        self.model = model
        self.disk, self.profile = None, remembered_for(model)
        self.model_label.setText(
            f"{model.name}: {model.architecture}, {model.n_layer} layers, {model.n_expert} experts "
            f"({model.n_expert_used} active), {gib(model.size_bytes)}  —  {self.path}")
        self.controls.set_model(model)
        self.controls.set_context(min(self._n_ctx, model.n_ctx_train or self._n_ctx))
        self._refresh()

    def _model_failed(self, exc: Exception) -> None:
        hint = getattr(exc, "hint", "")
        self.model_label.setText(f"Cannot read {self.path.name if self.path else 'the model'}: {exc}"
                                 + (f" {hint}" if hint else ""))

    def _refresh(self) -> None:
        """Re-plan (or re-estimate the user's placement) and show the result."""
        self.hardware_label.setText("\n".join(self._machine_lines()))
        if self.model is None or self.hardware is None:
            self.plan = None
            self.verdict.setText("Waiting for the model and this machine's hardware…"
                                 if self.path else "No model selected")
            self._update_load_button()
            return
        try:
            settings = self.controls.settings()
        except RuleError as exc:
            self.controls.rules_error.setText(str(exc))
            self.plan = None
            self._update_load_button()
            return
        self.controls.rules_error.setText("")
        base = base_placement(settings)
        if self.controls.manual and settings.experts_in_ram is not None:
            placement = manual_placement(base, settings.experts_in_ram, self.model.n_layer,
                                         self.planned.placement if self.planned else None)
            plan = evaluate(self.model, self.hardware, placement, ram=self.ram, build=self.build,
                            disk=self.disk, profile=self.profile)
        else:
            plan = plan_for(self.model, self.hardware, settings.n_ctx, base, self.build, self.ram,
                            disk=self.disk, profile=self.profile)
            assert self.path is not None
            self.tuned = autotuned(self.path, settings.n_ctx, self.hardware, self.build)
            self.planned = plan
            own = plan.placement.overrides[len(settings.rules):]  # the planner's rule, if any
            self.controls.show_plan(plan.experts_in_ram_layers, uses_shortcut=not own,
                                    gpus=bool(plan.gpus))
        self.plan = plan
        self._show(plan)
        if plan.verdict == "fits_streaming_from_ssd":
            self._probe_disk(self.model)

    def _probe_disk(self, model: GGUFModel) -> None:
        """Measure the model's drive once (a few seconds, on a worker): streaming's speed rests on it."""
        if self.disk is not None or self._disk_probing or not self._measure:
            return
        self._disk_probing = True

        def measured(disk: DiskSpeed | None) -> None:
            self._disk_probing = False
            if disk is not None and self.model is model:
                self.disk = disk
                self._refresh()

        run_in_background(lambda: model_disk_speed(model), self._alive(measured),
                          self._alive(lambda exc: setattr(self, "_disk_probing", False)))

    def _show(self, plan: Plan) -> None:
        words, icon = VERDICTS[plan.verdict]
        size = self.verdict.fontMetrics().height()
        self.verdict_icon.setPixmap(self.style().standardIcon(icon).pixmap(size, size))
        self.verdict.setText(words)
        lines = [f"• {r}" for r in plan.reasons] + [f"⚠ {w}" for w in plan.warnings]
        lines += [f"• {a}" for a in plan.advice]
        self.reasons.setText("\n".join(lines))
        rows = self._memory_rows(plan)
        self.table_model.set_rows(rows)
        self.table.resizeRowsToContents()
        frame = 2 * self.table.frameWidth()
        self.table.setFixedHeight(self.table.horizontalHeader().height() + frame
                                  + sum(self.table.rowHeight(i) for i in range(len(rows))))
        if plan.speed is not None:
            s = plan.speed
            self.speed.setText(f"Predicted: decode {s.decode}, prefill {s.prefill}")
            read = ", ".join(f"{d} {n / 1e9:.2f} GB" for d, n in s.decode_bytes.items() if n >= 1e7)
            self.speed_detail.setText("\n".join(([f"Each token reads {read}"] if read else []) + s.notes))
        if self.tuned is not None and not self.controls.manual:
            self.placement_label.setText("Engine placement, autotuned on this machine (Load uses "
                                         f"it): {self.tuned.describe()}")
        else:
            self.placement_label.setText(f"Engine placement: {plan.placement.describe()}")
        self._update_load_button()

    def _memory_rows(self, plan: Plan) -> list[MemoryRow]:
        """Each device's bytes with what it may give: free VRAM or available RAM, less headroom."""
        memory = self.hardware.memory if self.hardware else None
        usable: dict[str, tuple[int | None, str]] = {
            "CPU": (memory.available - RAM_HEADROOM if memory else None, "CPU (RAM)")}
        usable.update({g.device: (g.free - VRAM_HEADROOM, f"{g.device} ({g.name})") for g in plan.gpus})
        streaming = plan.verdict == "fits_streaming_from_ssd"
        return [MemoryRow(m, *usable.get(m.device, (None, m.device)),
                          streamed=streaming and m.device == "CPU") for m in plan.memory]

    def _machine_lines(self) -> list[str]:
        if self.hardware is None:
            return ["Detecting this machine…"]
        lines = [line for line in self.hardware.summary() if not line.startswith("Note:")]
        if self.build is not None:
            devices = ", ".join(d.name for d in self.build.devices) or "none"
            lines.append(f"llama.cpp build: {', '.join(self.build.backends)} (devices: {devices})")
        if self.ram is not None:
            r = self.ram
            lines.append(f"RAM measured: {r.read_bw / 1e9:.0f} GB/s read ({r.threads} threads), "
                         f"{r.copy_bw_1 / 1e9:.0f} GB/s copy (1 thread)")
        if self.disk is not None:
            d = self.disk
            lines.append(f"Model's drive measured: {d.random_read_bw / 1e9:.1f} GB/s for "
                         f"{d.block_bytes / 2**20:.0f} MiB reads at depth {d.depth}, "
                         f"{d.seq_read_bw / 1e9:.1f} GB/s sequential")
        return lines

    def _update_load_button(self) -> None:
        ok = self.plan is not None and self.plan.verdict != "does_not_fit" and not self.loading
        self.load_button.setEnabled(ok)
        self.tune_panel.set_available(ok, "" if ok else "Choose a model and a placement that fits first")
        if self.plan is not None:
            self.tune_panel.set_context(self.plan.placement.n_ctx)
        if self.plan is not None and self.plan.verdict == "does_not_fit":
            self.load_button.setToolTip("This placement does not fit; change the settings first")
        else:
            self.load_button.setToolTip("")

    def _load(self) -> None:
        if self.plan is None or self.path is None:
            return
        self.status.setText("Starting the load…")
        self.load_requested.emit(LoadParams(model=str(self.path), placement=self.load_placement()))

    def load_placement(self) -> PlacementPlan | None:
        """What "Load with this plan" loads: the planner's choice gives way to the placement
        autotune found fastest here for this context (as File > Load does); a placement the
        user set by hand loads as set."""
        if self.plan is None:
            return None
        if self.tuned is not None and not self.controls.manual:
            return self.tuned
        return self.plan.placement

    def _tune(self, request: TuneRequest) -> None:
        if self.plan is None or self.path is None or self.model is None:
            return
        request.model, request.start = str(self.path), self.plan.placement
        request.n_layer = self.model.n_layer
        self.tune_requested.emit(request)
