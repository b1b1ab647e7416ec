"""The settings a user may change on the Advisor page, and the placement they make.

Every change emits ``changed``; the page re-estimates memory and speed at once (pure
functions, a few milliseconds), so moving the "experts in RAM" slider shows its effect live.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.engine.placement import CacheType, ExpertCacheMode, PlacementPlan, TensorOverride
from app.gguf.info import GGUFModel


class RuleError(ValueError):
    """A per-tensor rule the user typed that llama.cpp could not use; says which line and why."""


def parse_rules(text: str) -> list[TensorOverride]:
    """``REGEX=DEVICE`` per line (like llama.cpp's -ot; blank lines and # comments skipped).
    A device list ``REGEX=CUDA0,CUDA1`` is not a thing llama.cpp does per tensor, so each
    line names one device."""
    rules = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, device = line.rpartition("=")
        if not sep or not pattern or not device.strip():
            raise RuleError(f"line {number}: expected REGEX=DEVICE, e.g. ffn_.*_exps=CPU")
        if "," in device:
            raise RuleError(f"line {number}: one device per rule ({device.strip()!r} names several); "
                            "write one line per device")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RuleError(f"line {number}: {pattern!r} is not a valid regex ({exc})") from None
        rules.append(TensorOverride(pattern=pattern, device=device.strip()))
    return rules


@dataclass
class Settings:
    """What the controls say, in plain data."""

    n_ctx: int
    experts_in_ram: int | None  # N of the first layers; None: the planner's choice as planned
    n_threads: int  # 0: the advisor's
    n_expert_used: int | None  # None: the model's own
    cache_type: str
    rules: list[TensorOverride]
    # hot experts in VRAM (engine patch 0004); None: the planner weighs them (AUTO_HOT_EXPERTS)
    expert_cache: ExpertCacheMode | None = None
    expert_cache_slots: int = 0  # experts a layer
    expert_cache_bytes: int = 0  # or VRAM in all, spread over the RAM layers (slots 0)
    # llama.cpp's mmap: off reads the weights into RAM, with a GPU its pinned memory
    use_mmap: bool = True


def base_placement(settings: Settings) -> PlacementPlan:
    """The settings the planner does not choose; the user's rules come first, so they win."""
    return PlacementPlan(n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                         n_expert_used=settings.n_expert_used, type_k=settings.cache_type,
                         type_v=settings.cache_type, overrides=list(settings.rules),
                         expert_cache=settings.expert_cache or "off",
                         expert_cache_slots=settings.expert_cache_slots,
                         expert_cache_bytes=settings.expert_cache_bytes, use_mmap=settings.use_mmap)


def manual_placement(base: PlacementPlan, first_n: int, n_layer: int, planned: PlacementPlan | None
                     ) -> PlacementPlan:
    """"Routed experts of the first N layers in RAM", everything else on the GPUs, split over
    several GPUs as the planner split them."""
    shortcut = "none" if first_n <= 0 else "all" if first_n >= n_layer else first_n
    split = planned.tensor_split if planned else []
    return replace(base, n_gpu_layers=-1, experts_in_ram=shortcut, tensor_split=list(split),
                   split_mode=planned.split_mode if planned else base.split_mode)


# the hot-experts choice that leaves them to the planner (weighed against whole layers in VRAM)
AUTO_HOT_EXPERTS = "auto"
# the units a hot-expert cache is sized in, as the CLI's --expert-cache-size takes them
SLOTS_UNIT, GIB_UNIT = "experts a layer", "GiB in all"


class PlanControls(QGroupBox):
    """Context size, experts in RAM, threads, active experts, KV cache type, per-tensor rules."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Settings", parent)
        self.ctx = QSpinBox()
        self.ctx.setRange(256, 1 << 20)
        self.ctx.setSingleStep(1024)
        self.ctx.setSuffix(" tokens")
        self.ctx.setKeyboardTracking(False)  # re-plan when typing ends, not per digit
        self.experts = QSlider(Qt.Orientation.Horizontal)
        self.experts.setPageStep(4)
        self.experts_label = QLabel()
        self.threads = QSpinBox()
        self.threads.setRange(0, 1024)
        self.threads.setSpecialValueText("auto")
        self.active = QSpinBox()
        self.active.setRange(0, 512)
        self.active.setSpecialValueText("model's own")
        self.cache = QComboBox()
        self.cache.addItems(list(typing.get_args(CacheType)))
        self.cache.setCurrentText("f16")
        self.hot_experts = QComboBox()
        self.hot_experts.addItems([AUTO_HOT_EXPERTS, *typing.get_args(ExpertCacheMode)])
        self.hot_experts.setToolTip("Keep the most chosen experts of each layer whose experts are "
                                    "in RAM in VRAM, on that layer's GPU (needs a GPU). auto: the "
                                    "planner weighs them against whole layers' experts in VRAM and "
                                    "shows what it chose; static: ranked at load; dynamic: "
                                    "refreshed as it decodes")
        self.hot_slots = QSpinBox()
        self.hot_slots.setRange(1, 512)
        self.hot_slots.setValue(16)
        self.hot_slots.setEnabled(False)
        self.hot_gib = QDoubleSpinBox()
        self.hot_gib.setRange(0.1, 4096.0)
        self.hot_gib.setDecimals(1)
        self.hot_gib.setSingleStep(0.5)
        self.hot_gib.setValue(4.0)
        self.hot_unit = QComboBox()
        self.hot_unit.addItems([SLOTS_UNIT, GIB_UNIT])
        self.hot_unit.setToolTip("Experts a layer, or VRAM in all (spread over the layers whose "
                                 "experts are in RAM)")
        self.hot_unit.setEnabled(False)
        self.hot_label = QLabel()  # auto: what the planner chose
        self.mmap = QCheckBox("memory-map the model file (mmap)")
        self.mmap.setChecked(True)  # llama.cpp's default
        self.mmap.setToolTip("Off: the weights kept in RAM are read into memory at load (with a GPU, "
                             "its pinned memory): prompts copy those experts to the GPU several "
                             "times faster, and dynamic hot experts are copied while tokens "
                             "decode instead of each token waiting. Loads slower; the RAM must "
                             "hold them (no paging from the file)")
        self.rules = QPlainTextEdit()
        self.rules.setPlaceholderText("one REGEX=DEVICE per line, first match wins, e.g.\n"
                                      r"blk\.(4[0-7])\.ffn_.*_exps=CPU")
        self.rules.setMaximumHeight(self.rules.fontMetrics().lineSpacing() * 5)
        self.rules_error = QLabel()
        self.rules_error.setWordWrap(True)
        self.replan = QPushButton("Plan for me")
        self.replan.setToolTip("The advisor's placement for this context size")

        slider_row = QHBoxLayout()
        slider_row.addWidget(self.experts, 1)
        slider_row.addWidget(self.experts_label)
        form = QFormLayout()
        form.addRow("Context size", self.ctx)
        form.addRow("Routed experts in RAM", slider_row)
        form.addRow("Threads", self.threads)
        form.addRow("Active experts", self.active)
        form.addRow("KV cache type", self.cache)
        hot_row = QHBoxLayout()
        hot_row.addWidget(self.hot_experts)
        hot_row.addWidget(self.hot_slots, 1)
        hot_row.addWidget(self.hot_gib, 1)
        hot_row.addWidget(self.hot_unit)
        form.addRow("Hot experts in VRAM", hot_row)
        form.addRow("", self.hot_label)
        form.addRow("Loading", self.mmap)
        form.addRow("Per-tensor rules", self.rules)
        form.addRow("", self.rules_error)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.replan, 0, Qt.AlignmentFlag.AlignRight)

        self._slider_touched = False
        self._n_layer = 0
        self.ctx.valueChanged.connect(self._changed)
        self.experts.valueChanged.connect(self._slider_moved)
        for spin in (self.threads, self.active):
            spin.valueChanged.connect(self._changed)
        self.cache.currentTextChanged.connect(self._changed)
        self.hot_experts.currentTextChanged.connect(self._hot_experts_changed)
        self.hot_slots.valueChanged.connect(self._changed)
        self.hot_gib.valueChanged.connect(self._changed)
        self.hot_unit.currentTextChanged.connect(self._hot_experts_changed)
        self.mmap.toggled.connect(self._changed)
        self.rules.textChanged.connect(self._changed)
        self.replan.clicked.connect(self.plan_for_me)
        self._hot_experts_changed()  # which of the size widgets shows

    def set_model(self, model: GGUFModel) -> None:
        """Ranges for ``model``: context up to its training length, its layers and experts."""
        self._n_layer = model.n_layer
        with _quiet(self.ctx, self.experts, self.active):
            self.ctx.setMaximum(max(model.n_ctx_train, 256))
            self.experts.setRange(0, model.n_layer)
            self.active.setRange(0, max(model.n_expert, 0))
            self.active.setValue(0)
        with _quiet(self.hot_slots):
            self.hot_slots.setRange(1, max(model.n_expert, 1))

    @property
    def manual(self) -> bool:
        """The user moved the slider: the placement is theirs, not the planner's."""
        return self._slider_touched

    def show_plan(self, experts_in_ram_layers: int, uses_shortcut: bool, gpus: bool,
                  planned: PlacementPlan | None = None) -> None:
        """Put the planner's choice of experts in RAM on the slider, and with the hot experts
        left to it (auto), its choice of those (``planned``'s), without ``changed``."""
        self._show_hot_experts(planned)
        with _quiet(self.experts):
            self.experts.setValue(experts_in_ram_layers)
        self.experts.setEnabled(gpus)
        self._slider_touched = False
        if not gpus:
            self.experts_label.setText("all in RAM (no usable GPU)")
            return
        self._update_label(planned=not uses_shortcut)

    def set_context(self, n_ctx: int) -> None:
        """Show ``n_ctx`` (clamped to the model's range) without emitting ``changed``."""
        with _quiet(self.ctx):
            self.ctx.setValue(n_ctx)

    def settings(self) -> Settings:
        """The controls as plain data; raises RuleError for a bad per-tensor rule."""
        mode = self._hot_experts_mode()
        by_gib = self.hot_unit.currentText() == GIB_UNIT
        return Settings(
            n_ctx=self.ctx.value(),
            experts_in_ram=self.experts.value() if self._slider_touched else None,
            n_threads=self.threads.value(),
            n_expert_used=self.active.value() or None,
            cache_type=self.cache.currentText(),
            rules=parse_rules(self.rules.toPlainText()),
            expert_cache=mode,
            expert_cache_slots=self.hot_slots.value() if mode and not by_gib else 0,
            expert_cache_bytes=int(self.hot_gib.value() * 2**30) if mode and by_gib else 0,
            use_mmap=self.mmap.isChecked(),
        )

    def _slider_moved(self) -> None:
        self._slider_touched = True
        self._update_label(planned=False)
        self.changed.emit()

    def _changed(self) -> None:
        self.changed.emit()

    def _hot_experts_mode(self) -> ExpertCacheMode | None:
        mode = self.hot_experts.currentText()
        return None if mode == AUTO_HOT_EXPERTS else typing.cast(ExpertCacheMode, mode)

    def _hot_experts_changed(self) -> None:
        mode = self._hot_experts_mode()
        chosen = mode not in (None, "off")
        if not chosen:  # auto shows the planner's choice, in experts a layer
            with _quiet(self.hot_unit):
                self.hot_unit.setCurrentText(SLOTS_UNIT)
        by_gib = self.hot_unit.currentText() == GIB_UNIT
        self.hot_slots.setEnabled(chosen)
        self.hot_unit.setEnabled(chosen)
        self.hot_slots.setVisible(mode != "off" and not by_gib)
        self.hot_gib.setVisible(chosen and by_gib)
        self.hot_unit.setVisible(mode != "off")
        self.hot_label.setVisible(mode is None)
        self.changed.emit()

    def _show_hot_experts(self, planned: PlacementPlan | None) -> None:
        if self._hot_experts_mode() is not None or planned is None:
            return
        chosen = planned.expert_cache != "off" and planned.expert_cache_slots > 0
        self.hot_slots.setVisible(chosen)
        self.hot_unit.setVisible(chosen)
        if chosen:
            with _quiet(self.hot_slots):
                self.hot_slots.setValue(planned.expert_cache_slots)
        # why (weighed and slower, no patch, all in VRAM): the plan's reasons
        self.hot_label.setText(f"the planner's choice: {planned.expert_cache}, "
                               f"{planned.expert_cache_slots} experts a layer" if chosen else
                               "the planner's choice: none")

    def plan_for_me(self) -> None:
        self._slider_touched = False
        self.changed.emit()

    def _update_label(self, planned: bool) -> None:
        n = self.experts.value()
        if planned:  # several GPUs: the first layers of each GPU's range, not of the model
            self.experts_label.setText(f"{n} of {self._n_layer} layers, split over the GPUs")
        elif n >= self._n_layer > 0:
            self.experts_label.setText("all layers")
        elif n == 0:
            self.experts_label.setText("none: all on the GPU")
        else:
            self.experts_label.setText(f"first {n} of {self._n_layer} layers")


class _quiet:
    """Block the widgets' signals for a programmatic update."""

    def __init__(self, *widgets: QWidget) -> None:
        self.widgets = widgets

    def __enter__(self) -> None:
        self.previous = [w.blockSignals(True) for w in self.widgets]

    def __exit__(self, *exc: object) -> None:
        for widget, previous in zip(self.widgets, self.previous, strict=True):
            widget.blockSignals(previous)
