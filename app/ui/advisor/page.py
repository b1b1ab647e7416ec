"""The Advisor page: this machine, the plan for the selected model, and the controls to change it.

The page takes the app state (this machine's hardware, RAM speed and engine build, and the model
loaded now, which the page follows) and the EngineController, and connects itself: Load loads
the plan on screen through the controller, Autotune runs there too (TuneRunner), and the
engine's progress and answers come back as the controller's signals. ``set_model`` plans for
another file; with none chosen, the page says how to choose one.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QStackedWidget,
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
from app.gguf.info import GGUFModel, read_model
from app.hardware import Hardware
from app.hardware.bandwidth import RamBandwidth
from app.hardware.disk import DiskSpeed
from app.load_plan import LoadPlan, autotuned, model_disk_speed
from app.ui.advisor.controls import PlanControls, RuleError, base_placement, manual_placement
from app.ui.advisor.memory_table import MemoryRow, MemoryTableModel
from app.ui.app_state import AppState, LoadedModel
from app.ui.background import Tasks
from app.ui.engine_controller import EngineController
from app.ui.tune.panel import TunePanel, TuneRequest
from app.ui.tune.runner import TuneRunner
from app.ui.widgets.empty_state import EmptyState
from app.ui.widgets.look import SPACING, PageHeader, page_layout, tighten
from app.ui.widgets.theme import primary
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

    def __init__(self, state: AppState, engine: EngineController, parent: QWidget | None = None, *,
                 n_ctx: int = DEFAULT_CONTEXT, probe_disk: bool = True) -> None:
        """``n_ctx``: the context planned for at first. ``probe_disk``: measure the model's drive
        when the plan streams from it; off for a recorded machine, whose drive this one is not."""
        super().__init__(parent)
        self.state, self.engine = state, engine
        self.hardware: Hardware | None = None
        self.build: BuildInfo | None = None
        self.ram: RamBandwidth | None = None
        self.disk: DiskSpeed | None = None  # the model's drive, probed when it must stream
        self.tuned: PlacementPlan | None = None  # autotune's winner for this model and context
        self.profile: list[list[int]] | None = None  # routing remembered for the model
        self._probe_disk_allowed = probe_disk
        self._disk_probing = False
        self._tasks = Tasks(self)
        self.path: Path | None = None
        self.model: GGUFModel | None = None
        self.planned: Plan | None = None  # the planner's latest choice
        self.plan: Plan | None = None  # what is shown: the planner's, or the user's placement
        self.loading = False
        self._n_ctx = n_ctx
        self._build_ui()
        self.tuner = TuneRunner(state, engine, self.tune_panel)
        state.connect_hardware(self.set_hardware)
        state.connect_ram(self.set_ram)
        state.connect_build(self.set_build_info)
        state.connect_loaded(self._loaded_changed)
        engine.load_progress.connect(self.show_load_progress)
        engine.load_failed.connect(self.show_load_failed)
        self._refresh()

    # --- what the app state and the engine say ------------------------------------------------

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
        self._tasks.run(lambda: read_model(path),
                        lambda model: self._model_read(model) if self.path == path else None,
                        lambda exc: self._model_failed(exc) if self.path == path else None)

    def _loaded_changed(self, loaded: LoadedModel | None) -> None:
        """The page follows the loaded model: planned for (if it shows another), and said loaded."""
        if loaded is None:
            if not self.loading and self.status.text().startswith("Loaded "):
                self.status.setText("")  # unloaded, or gone with the engine
            return
        if loaded.path != self.path:
            self.set_model(loaded.path)
        self.show_loaded(loaded.result)

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
        self.header = PageHeader("Advisor")
        self.model_label = self.header.subtitle  # the model planned for, in a line
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_label.show()
        self.choose_button = self.header.add_action(QPushButton("Choose model file…"))
        self.choose_button.setToolTip("Plan for a GGUF file on this computer (any shard of a split model)")
        self.choose_button.clicked.connect(self._choose_file)
        self.empty = EmptyState(
            "advisor", "No model chosen",
            "The Advisor works out whether a model fits this machine, how fast it will run, and which "
            "parts go to the GPU and which to RAM. Choose a GGUF file, or load one from the Models "
            "page: the Advisor plans the model that is loaded.", "Choose model file…")
        self.empty.action_clicked.connect(self._choose_file)
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
        self.load_button = primary(QPushButton("Load with this plan"))
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
        side = QWidget()  # scrolls in a short window rather than squeezing the settings
        right = tighten(QVBoxLayout(side))
        right.setContentsMargins(0, 0, 6, 0)
        right.addWidget(machine_box)
        right.addWidget(self.controls)
        right.addLayout(load_row)
        right.addWidget(self.status)
        right.addWidget(self.tune_panel)
        right.addStretch(1)
        self.content = QWidget()  # the plan and its controls, once a model is chosen
        columns = tighten(QHBoxLayout(self.content))
        columns.setSpacing(SPACING + 4)
        side_scroll = QScrollArea()
        side_scroll.setWidget(side)
        side_scroll.setWidgetResizable(True)
        side_scroll.setFrameShape(QFrame.Shape.NoFrame)
        side_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        columns.addWidget(plan_box, 3)
        columns.addWidget(side_scroll, 2)
        self.body = QStackedWidget()
        self.body.addWidget(self.content)
        self.body.addWidget(self.empty)
        layout = page_layout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.body, 1)

        self.controls.changed.connect(self._refresh)
        self.load_button.clicked.connect(self._load)
        self.tune_panel.tune_requested.connect(self._tune)

    # --- behaviour ----------------------------------------------------------------------------

    def _model_read(self, model: GGUFModel) -> None:
        self.model = model
        self.disk, self.profile = None, remembered_for(model)
        self.model_label.setText(
            f"{model.name}: {model.architecture}, {model.layers_text}, {model.n_expert} experts "
            f"({model.n_expert_used} active), {gib(model.size_bytes)}  —  {self.path}")
        self.controls.set_model(model)
        self.controls.set_context(min(self._n_ctx, model.n_ctx_train or self._n_ctx))
        self._refresh()

    def _model_failed(self, exc: Exception) -> None:
        hint = getattr(exc, "hint", "")
        self.model_label.setText(f"Cannot read {self.path.name if self.path else 'the model'}: {exc}"
                                 + (f" {hint}" if hint else ""))

    def _choose_file(self) -> None:
        folder = self.path.parent if self.path else Path.home()
        path, _ = QFileDialog.getOpenFileName(self, "Plan for a model", str(folder), "GGUF models (*.gguf)")
        if path:
            self.set_model(Path(path))

    def _refresh(self) -> None:
        """Re-plan (or re-estimate the user's placement) and show the result."""
        self.body.setCurrentWidget(self.content if self.path is not None else self.empty)
        self.choose_button.setVisible(self.path is not None)  # the empty state has its own
        if self.path is None:
            self.model_label.setText("Will a model fit this machine, how fast will it run, and where "
                                     "does each part go?")
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
                            disk=self.disk, profile=self.profile,
                            hot_experts=False if settings.expert_cache == "off" else None)
            assert self.path is not None
            self.tuned = autotuned(self.path, settings.n_ctx, self.hardware, self.build)
            self.planned = plan
            own = plan.placement.overrides[len(settings.rules):]  # the planner's rule, if any
            self.controls.show_plan(plan.experts_in_ram_layers, uses_shortcut=not own,
                                    gpus=bool(plan.gpus), planned=plan.placement)
        self.plan = plan
        self._show(plan)
        if plan.verdict == "fits_streaming_from_ssd":
            self._probe_disk(self.model)

    def _probe_disk(self, model: GGUFModel) -> None:
        """Measure the model's drive once (a few seconds, on a worker): streaming's speed rests on it."""
        if self.disk is not None or self._disk_probing or not self._probe_disk_allowed:
            return
        self._disk_probing = True

        def measured(disk: DiskSpeed | None) -> None:
            self._disk_probing = False
            if disk is not None and self.model is model:
                self.disk = disk
                self._refresh()

        self._tasks.run(lambda: model_disk_speed(model), measured,
                        lambda exc: setattr(self, "_disk_probing", False))

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
        params = LoadParams(model=str(self.path), placement=self.load_placement())
        source = ("manual" if self.controls.manual
                  else "autotuned" if self.tuned is not None else "advisor")
        self.engine.load(params, LoadPlan(params, self.plan, source))

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
        self.tuner.start(request)
