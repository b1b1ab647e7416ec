"""System prompt, sampling preset, custom temperature/top_p/max tokens and what to do with a
conversation longer than the context: one form, used for a conversation (Chat settings) and for
the defaults of new chats (Settings page)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QPlainTextEdit, QSpinBox, QWidget

from app.store import ChatDefaults
from app.ui.chat.presets import CONTEXT_POLICIES, CUSTOM, PRESETS, user_name


class SamplingForm(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)  # it sits in a group box, which has its own
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("e.g. You are a concise assistant.")
        self.system_prompt.setTabChangesFocus(True)
        self.system_prompt.setMaximumHeight(self.system_prompt.fontMetrics().lineSpacing() * 6)
        self.preset = QComboBox()
        for preset in PRESETS.values():
            self.preset.addItem(f"{preset.label}: {preset.description}", preset.name)
        self.preset.addItem("Custom", CUSTOM)
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.05, decimals=2)
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.01, decimals=2)
        self.max_tokens = QSpinBox(minimum=0, maximum=1048576, singleStep=256)
        self.max_tokens.setSpecialValueText("Until the context ends")  # shown for 0
        self.max_tokens.setToolTip("A limit cuts reasoning models off mid-thought; 0: none")
        self.context_policy = QComboBox()
        self.context_policy.setToolTip("When the conversation outgrows the model's context, "
                                       "what is left out of what the model sees (the "
                                       "conversation itself is always kept)")
        for policy, label in CONTEXT_POLICIES.items():
            self.context_policy.addItem(label, policy.value)
        form.addRow("System prompt", self.system_prompt)
        form.addRow("Sampling", self.preset)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top p", self.top_p)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Long conversations", self.context_policy)
        self.context_policy.currentIndexChanged.connect(self.changed)
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self.system_prompt.textChanged.connect(self.changed)
        for spin in (self.temperature, self.top_p, self.max_tokens):
            spin.valueChanged.connect(self.changed)

    def set_values(self, values: ChatDefaults) -> None:
        self.blockSignals(True)
        self.system_prompt.setPlainText(values.system_prompt)
        self.temperature.setValue(values.temperature)
        self.top_p.setValue(values.top_p)
        self.max_tokens.setValue(values.max_tokens)
        self.context_policy.setCurrentIndex(max(self.context_policy.findData(values.context_policy), 0))
        index = self.preset.findData(values.preset)
        name = user_name(values.preset)
        if index < 0 and name is not None:  # the user's own preset: kept unless changed
            index = self.preset.findData(CUSTOM)
            self.preset.insertItem(index, f"{name} (your preset)", values.preset)
        self.preset.setCurrentIndex(index if index >= 0 else self.preset.findData(CUSTOM))
        self._preset_changed()
        self.blockSignals(False)

    def values(self) -> ChatDefaults:
        return ChatDefaults(system_prompt=self.system_prompt.toPlainText().strip(),
                            preset=self.preset.currentData(), temperature=self.temperature.value(),
                            top_p=self.top_p.value(), max_tokens=self.max_tokens.value(),
                            context_policy=self.context_policy.currentData())

    def _preset_changed(self) -> None:
        preset = PRESETS.get(self.preset.currentData())
        if preset is not None:  # a named preset fixes temperature and top_p; show them
            self.temperature.setValue(preset.temperature)
            self.top_p.setValue(preset.top_p)
        self.temperature.setEnabled(preset is None)
        self.top_p.setEnabled(preset is None)
        self.changed.emit()
