"""What the Models page says when something goes wrong, and the dialog that asks for a Hub token."""

from __future__ import annotations

import errno
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.errors import EngineError
from app.hub.download import ChecksumError, DiskFullError, DownloadCancelled
from app.hub.errors import GatedRepoError, HubError, HubUnreachableError, RepoNotFoundError
from app.hub.library import LibraryError
from app.hub.token import KeyringUnavailableError


def describe_error(error: BaseException) -> tuple[str, str]:
    """A headline and the detail (cause and fix) for an error from the Hub, the disk or the library."""
    headlines: list[tuple[type[BaseException], str]] = [
        (HubUnreachableError, "No connection to the Hub"),
        (RepoNotFoundError, "Repository not found"),
        (GatedRepoError, "This model is gated"),
        (DiskFullError, "Not enough disk space"),
        (ChecksumError, "A shard failed its checksum"),
        (DownloadCancelled, "Download stopped"),
        (KeyringUnavailableError, "The token was not saved"),
        (HubError, "The Hub answered with an error"),
        (LibraryError, "Library"),
        (EngineError, "Not a usable model file"),
    ]
    for kind, headline in headlines:
        if isinstance(error, kind):
            return headline, str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "The disk is full", f"{error}. Free some space, then resume the download."
    if isinstance(error, OSError):
        return "Disk error", f"{error}. Check the folder's permissions and free space."
    return "Unexpected error", f"{type(error).__name__}: {error}"


class MessageBanner(QFrame):
    """One message at a time above the page's content, with an optional action button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.icon = QLabel()
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action = QPushButton()
        self.close_button = QPushButton("Dismiss")
        self.close_button.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.action, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignTop)
        self._action: Callable[[], None] | None = None
        self.action.clicked.connect(self._run_action)
        self.kind = ""
        self.hide()

    def show_message(
        self, kind: str, headline: str, detail: str = "", action: tuple[str, Callable[[], None]] | None = None
    ) -> None:
        """``kind`` is "error", "warning" or "info" (the icon); ``action`` is (button text, callback)."""
        icons = {
            "error": QStyle.StandardPixmap.SP_MessageBoxCritical,
            "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
        }
        icon = self.style().standardIcon(icons.get(kind, QStyle.StandardPixmap.SP_MessageBoxInformation))
        size = self.style().pixelMetric(QStyle.PixelMetric.PM_SmallIconSize)
        self.icon.setPixmap(icon.pixmap(size, size))
        self.kind = kind
        self.text.setText(f"<b>{_escape(headline)}</b>" + (f"<br>{_escape(detail)}" if detail else ""))
        self._action = action[1] if action else None
        self.action.setText(action[0] if action else "")
        self.action.setVisible(action is not None)
        self.show()

    def show_error(self, error: BaseException, action: tuple[str, Callable[[], None]] | None = None) -> None:
        self.show_message("error", *describe_error(error), action=action)

    @property
    def message(self) -> str:
        """The text shown, without markup (for tests and accessibility)."""
        return (
            self.text.text()
            .replace("<br>", "\n")
            .replace("<b>", "")
            .replace("</b>", "")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
        )

    def _run_action(self) -> None:
        if self._action is not None:
            self.hide()
            self._action()


class TokenDialog(QDialog):
    """Asks for a Hub access token (hidden input); ``token_entered`` carries it when the user saves."""

    token_entered = Signal(str)

    def __init__(self, parent: QWidget | None, endpoint: str, reason: str, keyring_name: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in to the Hugging Face Hub")
        self.setMinimumWidth(self.fontMetrics().averageCharWidth() * 70)  # scales with the font (high DPI)
        why = QLabel(_escape(reason))
        why.setWordWrap(True)
        where = QLabel(
            f'Create a token with read access at <a href="{endpoint}/settings/tokens">'
            f"{_escape(endpoint)}/settings/tokens</a>, and paste it here. It is kept in the system "
            f"keyring ({_escape(keyring_name)}), never in a file; HF_TOKEN in the environment, if set, "
            "is used instead."
        )
        where.setWordWrap(True)
        where.setOpenExternalLinks(True)
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("hf_…")
        button = QDialogButtonBox.StandardButton
        buttons = QDialogButtonBox(button.Save | button.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (why, where, self.token_edit, buttons):
            layout.addWidget(widget)

    def accept(self) -> None:
        token = self.token_edit.text().strip()
        self.token_edit.clear()  # the token lives on only in the keyring
        super().accept()
        if token:
            self.token_entered.emit(token)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
