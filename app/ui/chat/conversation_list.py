"""The Chat page's left pane: a "New chat" button and a search box over the list of
conversations (the search reads every message: SQLite FTS5 in the store).

Clicking a conversation opens it; double-click or F2 renames it in place (the model writes the
new title to the store); the context menu renames or deletes. What opening, creating and
deleting mean is the page's business: the pane only says what the user asked for.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLineEdit,
    QListView,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.chat.conversation_model import ID_ROLE, ConversationListModel
from app.ui.widgets.theme import primary


class ConversationList(QWidget):
    """The conversations (most recent first) and the button that starts a new one."""

    new_requested = Signal()
    open_requested = Signal(int)  # conversation id
    delete_requested = Signal(int)  # conversation id
    export_requested = Signal(int, str)  # conversation id, "markdown" or "json"

    def __init__(self, conversations: ConversationListModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conversations = conversations
        self.list = QListView()
        self.list.setObjectName("conversations")  # styled as a sidebar (app/ui/widgets/theme.py)
        self.list.setModel(conversations)
        self.list.setWordWrap(True)  # a search's snippet wraps under its title
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed
                                  | QAbstractItemView.EditTrigger.DoubleClicked)
        self.list.clicked.connect(self._list_clicked)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._list_menu)
        self.new_button = primary(QPushButton("New chat"))
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(lambda: self.new_requested.emit())
        self.search = QLineEdit(placeholderText="Search all conversations", clearButtonEnabled=True)
        self.search.setToolTip("Words in any message or title; each word may be the start of one")
        # searched after a short pause in typing, not at every key
        self._search_timer = QTimer(self, singleShot=True, interval=200)
        self._search_timer.timeout.connect(lambda: conversations.set_query(self.search.text()))
        self.search.textChanged.connect(lambda _text: self._search_timer.start())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.new_button)
        layout.addWidget(self.search)
        layout.addWidget(self.list)

    def select(self, conversation_id: int | None) -> None:
        """Make this conversation the current row (None: leave the selection as it is)."""
        row = self.conversations.row_of(conversation_id) if conversation_id is not None else -1
        if row >= 0:
            self.list.setCurrentIndex(self.conversations.index(row))

    def _list_clicked(self, index: QModelIndex) -> None:
        self.open_requested.emit(index.data(ID_ROLE))

    def _list_menu(self, position: Any) -> None:
        index = self.list.indexAt(position)
        if not index.isValid():
            return
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self.list.edit(index))
        conversation_id = index.data(ID_ROLE)
        menu.addAction("Export as Markdown…", lambda: self.export_requested.emit(conversation_id, "markdown"))
        menu.addAction("Export as JSON…", lambda: self.export_requested.emit(conversation_id, "json"))
        menu.addAction("Delete", lambda: self.delete_requested.emit(index.data(ID_ROLE)))
        menu.popup(self.list.viewport().mapToGlobal(position))
