"""Settings' "OpenAI-compatible server" group: on/off, address, port, API key, the base URL.

It saves what the user chooses (the key in the system keyring only) and says it through
``config_changed``; the main window hands that to ServeControl, whose state comes back
through ``show_status``.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.engine.protocol import ContextPolicy
from app.store import Store
from app.ui.serve_control import (
    KeyringUnavailable,
    ServeConfig,
    keyring_api_key,
    load_config,
    save_config,
    save_keyring_api_key,
)

NO_KEYRING = "no system keyring here: the key is kept for this session only"


class ServeGroup(QGroupBox):
    config_changed = Signal(object)  # ServeConfig

    def __init__(self, store: Store, parent: QWidget | None = None) -> None:
        super().__init__("OpenAI-compatible server", parent)
        self.store = store
        self._session_key: str | None = None  # only where there is no keyring
        self.keyring_ok = True
        try:
            key = keyring_api_key()
        except KeyringUnavailable:
            key, self.keyring_ok = None, False
        saved = load_config(store, key)
        form = QFormLayout(self)
        self.enabled = QCheckBox("Serve the loaded model to other programs (off by default)")
        self.enabled.setChecked(saved.enabled)
        self.enabled.toggled.connect(self._changed)
        form.addRow(self.enabled)
        self.host = QLineEdit(saved.host)
        self.host.setToolTip("127.0.0.1: this machine only; 0.0.0.0: every network interface")
        self.host.editingFinished.connect(self._changed)
        form.addRow("Address", self.host)
        self.warning = QLabel(wordWrap=True)
        form.addRow("", self.warning)
        self.port = QSpinBox(minimum=1, maximum=65535)
        self.port.setValue(saved.port)
        self.port.editingFinished.connect(self._changed)
        form.addRow("Port", self.port)
        self.allowed_hosts = QLineEdit(", ".join(saved.allowed_hosts),
                                       placeholderText="e.g. mybox.local (comma-separated)")
        self.allowed_hosts.setToolTip(
            "Requests must name the server by its address (the Host header); web pages that "
            "point another name at it are refused. Names listed here are allowed too.")
        self.allowed_hosts.editingFinished.connect(self._changed)
        form.addRow("Allowed host names", self.allowed_hosts)
        self.allowed_origins = QLineEdit(", ".join(saved.allowed_origins),
                                         placeholderText="e.g. https://chat.example "
                                                         "(comma-separated; * for any)")
        self.allowed_origins.setToolTip(
            "Web pages on this machine (http://localhost:...) may call the server from a browser. "
            "Pages of the sites listed here may too; * lets any site's pages call it.")
        self.allowed_origins.editingFinished.connect(self._changed)
        form.addRow("Allowed web origins", self.allowed_origins)
        self.context_policy = QComboBox()
        for policy, words in POLICY_WORDS.items():
            self.context_policy.addItem(words, policy.value)
        self.context_policy.setCurrentIndex(max(0, self.context_policy.findData(saved.context_policy.value)))
        self.context_policy.setToolTip(
            "A conversation longer than the context, when the request names no context_policy: "
            "refused with a 400 (what OpenAI's API does), or answered with earlier turns left out.")
        self.context_policy.activated.connect(lambda _index: self._changed())
        form.addRow("Long conversations", self.context_policy)
        self.key = QLineEdit(echoMode=QLineEdit.EchoMode.Password,
                             placeholderText="optional; clients send it as 'Authorization: Bearer KEY'")
        self.save_key, self.remove_key = QPushButton("Save key"), QPushButton("Remove key")
        self.save_key.clicked.connect(self._save_key)
        self.remove_key.clicked.connect(self._remove_key)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key, 1)
        key_row.addWidget(self.save_key)
        key_row.addWidget(self.remove_key)
        form.addRow("API key", key_row)
        self.key_status = QLabel(wordWrap=True)
        form.addRow("", self.key_status)
        self.url = QLabel()
        self.url.setTextInteractionFlags(self.url.textInteractionFlags().TextSelectableByMouse)
        copy = QPushButton("Copy URL")
        copy.clicked.connect(lambda: QApplication.clipboard().setText(self.config().url))
        url_row = QHBoxLayout()
        url_row.addWidget(self.url, 1)
        url_row.addWidget(copy)
        form.addRow("Base URL", url_row)
        self.status = QLabel("Off", wordWrap=True)
        form.addRow("Status", self.status)
        self._saved_key = key
        self._show()

    def config(self) -> ServeConfig:
        """What the form says now (with the saved key)."""
        return ServeConfig(enabled=self.enabled.isChecked(), host=self.host.text().strip(),
                           port=self.port.value(), api_key=self._saved_key or self._session_key,
                           allowed_hosts=_items(self.allowed_hosts.text()),
                           allowed_origins=_items(self.allowed_origins.text()),
                           context_policy=ContextPolicy(self.context_policy.currentData()))

    def show_status(self, text: str) -> None:
        """ServeControl's state: running with its counts, waiting, or why it is off."""
        self.status.setText(text)

    def _changed(self) -> None:
        config = self.config()
        save_config(self.store, config)
        self._show()
        self.config_changed.emit(config)

    def _show(self) -> None:
        config = self.config()
        self.url.setText(config.url)
        self.warning.setVisible(config.exposed)
        self.warning.setText(f"⚠ On {config.host or '(no address)'}, other machines on your "
                             "network can reach the server: an API key is required.")
        if not self.keyring_ok:
            self.key_status.setText(NO_KEYRING + (" (one is set)" if self._session_key else ""))
        else:
            self.key_status.setText("saved in the system keyring" if self._saved_key
                                    else "not set: any program on this machine can use the server")

    def _save_key(self) -> None:
        key = self.key.text().strip()
        if not key or " " in key:
            self.key_status.setText("Type a key without spaces first (any long random string).")
            return
        self._store_key(key)

    def _remove_key(self) -> None:
        self._store_key(None)

    def _store_key(self, key: str | None) -> None:
        try:
            save_keyring_api_key(key)
            self._saved_key = key
        except KeyringUnavailable:
            self.keyring_ok, self._session_key = False, key
        self.key.clear()
        self._changed()


# what a request that names no context_policy gets, in the Settings' words
POLICY_WORDS = {
    ContextPolicy.STOP: "Refuse (a 400, as OpenAI's API)",
    ContextPolicy.DROP_MIDDLE: "Leave out the middle turns",
    ContextPolicy.ROLLING_WINDOW: "Leave out the oldest turns",
}


def _items(text: str) -> tuple[str, ...]:
    """A comma-separated line as its non-empty items."""
    return tuple(item.strip() for item in text.split(",") if item.strip())
