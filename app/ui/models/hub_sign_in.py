"""Signing in to the Hub from the Models page: the token every Hub call sends, and asking for one.

The token is kept in the system keyring. Where no keyring can keep it, it is held in memory for
this session only (never written anywhere), and the banner says so.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from app.hub import token as hub_token
from app.ui.background import Tasks
from app.ui.models.messages import MessageBanner, TokenDialog


class HubSignIn(QObject):
    """The Hub token of one panel: ``token()`` for workers, ``ask()`` for a new one.

    ``signed_in`` fires once a newly entered token is in use, before the retry that asked for it runs.
    """

    signed_in = Signal()

    def __init__(self, tasks: Tasks, banner: MessageBanner, endpoint: str, parent: QWidget) -> None:
        super().__init__(parent)
        self.tasks, self.banner, self.endpoint = tasks, banner, endpoint
        self._dialog_parent = parent  # the token dialog opens over this widget
        self.session_token: str | None = None  # entered when no keyring could keep it; memory only
        self.token_dialog: TokenDialog | None = None

    def token(self) -> str | None:
        """Called on workers: the keyring may block while it asks to be unlocked."""
        return hub_token.get_token() or self.session_token

    def ask(self, reason: str, then: Callable[[], None]) -> None:
        """Ask for a Hub token, keep it in the keyring, then run ``then`` (a retry)."""
        if self.token_dialog is not None and self.token_dialog.isVisible():
            return
        self.token_dialog = TokenDialog(self._dialog_parent, self.endpoint, reason, hub_token.keyring_name())
        self.token_dialog.token_entered.connect(lambda token: self._save(token, then))
        self.token_dialog.open()

    def _save(self, token: str, then: Callable[[], None]) -> None:
        def saved(where: object) -> None:
            self.session_token = None
            self.signed_in.emit()
            self.banner.show_message(
                "info", "Signed in", f"The token is kept in the system keyring ({where})."
            )
            then()

        def failed(error: Exception) -> None:
            if isinstance(error, hub_token.KeyringUnavailableError):
                self.session_token = token.strip()  # this session only: never written anywhere
                self.signed_in.emit()
                self.banner.show_message("warning", "Signed in until MoE Desk closes", f"{error}")
                then()
            else:
                self.banner.show_error(error)

        self.tasks.run(lambda: hub_token.save_token(token), saved, failed)
