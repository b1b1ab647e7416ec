"""The conversation list: a QAbstractListModel over the store (most recent first)."""

from __future__ import annotations

import datetime
from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt

from app.store import Conversation, Store

ID_ROLE = Qt.ItemDataRole.UserRole + 1
Index = QModelIndex | QPersistentModelIndex


class ConversationListModel(QAbstractListModel):
    def __init__(self, store: Store, parent: Any = None) -> None:
        super().__init__(parent)
        self._store = store
        self._rows: list[Conversation] = store.conversations()

    def refresh(self) -> None:
        """Re-read the list (after a new message moved a conversation to the top)."""
        self.beginResetModel()
        self._rows = self._store.conversations()
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        conversation = self._rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return conversation.title
        if role == Qt.ItemDataRole.ToolTipRole:
            when = datetime.datetime.fromtimestamp(conversation.updated)
            return f"{conversation.title}\nlast message {when:%Y-%m-%d %H:%M}"
        if role == ID_ROLE:
            return conversation.id
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        return super().flags(index) | Qt.ItemFlag.ItemIsEditable

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        """Rename in place (double-click or F2)."""
        title = str(value).strip()
        if role != Qt.ItemDataRole.EditRole or not index.isValid() or not title:
            return False
        conversation = self._rows[index.row()]
        self._rows[index.row()] = self._store.update_conversation(conversation.id, title=title)
        self.dataChanged.emit(index, index)
        return True

    def row_of(self, conversation_id: int) -> int:
        return next((i for i, c in enumerate(self._rows) if c.id == conversation_id), -1)

    def conversation_at(self, row: int) -> Conversation:
        return self._rows[row]
