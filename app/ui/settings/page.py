"""Settings: where models live, the Hub token, light/dark theme, defaults for new chats and
the context size asked of the advisor when a model is loaded. Each change is saved at once."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.engine.placement import DEFAULT_CONTEXT
from app.store import LOAD_CONTEXT, MODEL_FOLDER, THEME, Store
from app.ui.chat.sampling_form import SamplingForm
from app.ui.settings import hub_token
from app.ui.settings.serve_group import ServeGroup
from app.ui.widgets.look import SPACING, PageHeader, page_layout, tighten
from app.ui.widgets.theme import THEMES

DEFAULT_LOAD_CONTEXT = DEFAULT_CONTEXT  # as the CLI's


class SettingsPage(QWidget):
    theme_changed = Signal(str)
    models_folder_changed = Signal(object)  # Path

    def __init__(self, store: Store, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        content = QWidget()
        column = tighten(QVBoxLayout(content))
        column.setSpacing(SPACING + 4)

        general = QGroupBox("General")
        form = QFormLayout(general)
        self.folder = QLineEdit(str(store.models_folder()))
        self.folder.editingFinished.connect(lambda: self.set_models_folder(Path(self.folder.text())))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form.addRow("Model folder", row)
        self.theme = QComboBox()
        for name in THEMES:
            self.theme.addItem(name.capitalize(), name)
        self.theme.setCurrentIndex(max(self.theme.findData(store.setting(THEME, "system")), 0))
        self.theme.currentIndexChanged.connect(self._theme_chosen)
        form.addRow("Theme", self.theme)
        self.context = QSpinBox(minimum=512, maximum=1_048_576, singleStep=1024)
        self.context.setValue(int(store.setting(LOAD_CONTEXT, DEFAULT_LOAD_CONTEXT)))
        self.context.setToolTip("Context size the advisor plans for when a model is loaded "
                                "from the Models page (capped at what the model was trained for)")
        self.context.valueChanged.connect(lambda v: self.store.set_setting(LOAD_CONTEXT, v))
        form.addRow("Context for loads (tokens)", self.context)
        column.addWidget(general)

        hub = QGroupBox("Hugging Face token (for gated models)")
        hub_form = QFormLayout(hub)
        self.token = QLineEdit(echoMode=QLineEdit.EchoMode.Password,
                               placeholderText="hf_… (kept in the system keyring, never in a file)")
        save, remove = QPushButton("Save"), QPushButton("Remove")
        save.clicked.connect(self._save_token)
        remove.clicked.connect(self._remove_token)
        token_row = QHBoxLayout()
        token_row.addWidget(self.token, 1)
        token_row.addWidget(save)
        token_row.addWidget(remove)
        self.token_status = QLabel(hub_token.describe(), wordWrap=True)
        hub_form.addRow("Token", token_row)
        hub_form.addRow("", self.token_status)
        column.addWidget(hub)

        defaults = QGroupBox("Defaults for new chats")
        self.chat_defaults = SamplingForm()
        self.chat_defaults.set_values(store.chat_defaults())
        self.chat_defaults.changed.connect(
            lambda: self.store.set_chat_defaults(self.chat_defaults.values()))
        QVBoxLayout(defaults).addWidget(self.chat_defaults)
        column.addWidget(defaults)
        self.serve = ServeGroup(store)
        column.addWidget(self.serve)
        column.addStretch(1)

        content.setMaximumWidth(content.fontMetrics().averageCharWidth() * 120)  # a readable measure
        column_row = QWidget()
        centred = tighten(QHBoxLayout(column_row))
        centred.addWidget(content, 1)
        centred.addStretch(0)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(column_row)
        layout = page_layout(self)
        layout.addWidget(PageHeader("Settings", "Saved as you change them."))
        layout.addWidget(scroll, 1)

    def set_models_folder(self, folder: Path) -> None:
        self.folder.setText(str(folder))
        self.store.set_setting(MODEL_FOLDER, str(folder))
        self.models_folder_changed.emit(folder)

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Model folder", self.folder.text())
        if chosen:
            self.set_models_folder(Path(chosen))

    def _theme_chosen(self) -> None:
        theme = self.theme.currentData()
        self.store.set_setting(THEME, theme)
        self.theme_changed.emit(theme)

    def _save_token(self) -> None:
        try:
            hub_token.save(self.token.text())
        except Exception as exc:  # keyring missing, bad token: the message says which and why
            self.token_status.setText(str(exc))
            return
        self.token.clear()
        self.token_status.setText(hub_token.describe())

    def _remove_token(self) -> None:
        try:
            hub_token.delete()
        except Exception as exc:
            self.token_status.setText(str(exc))
            return
        self.token_status.setText(hub_token.describe())


def demo_page() -> QWidget:
    folder = Path(tempfile.mkdtemp(prefix="moedesk-demo-"))
    return SettingsPage(Store(folder / "demo.sqlite3"))
