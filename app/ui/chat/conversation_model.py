"""The conversation list: a QAbstractListModel over the store (most recent first), or over
the conversations a search finds (each with the snippet of its best-matching message)."""

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
        self._snippets: dict[int, str] = {}  # conversation id -> matching words, while searching
        self.query = ""

    def refresh(self) -> None:
        """Re-read the list (after a new message moved a conversation to the top), keeping
        the search."""
        self.beginResetModel()
        if self.query.strip():
            hits = self._store.search(self.query)
            self._rows = [h.conversation for h in hits]
            self._snippets = {h.conversation_id: _one_line(h.snippet)
                              for h in hits if h.message_id is not None}
        else:
            self._rows, self._snippets = self._store.conversations(), {}
        self.endResetModel()

    def set_query(self, text: str) -> None:
        """Show only the conversations matching ``text`` (every word; empty: all)."""
        self.query = text
        self.refresh()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        conversation = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole and conversation.id in self._snippets:
            return f"{conversation.title}\n    {self._snippets[conversation.id]}"
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return conversation.title
        if role == Qt.ItemDataRole.ToolTipRole:
            when = datetime.datetime.fromtimestamp(conversation.updated)
            found = f"\n{self._snippets[conversation.id]}" if conversation.id in self._snippets else ""
            return f"{conversation.title}\nlast message {when:%Y-%m-%d %H:%M}{found}"
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


def _one_line(snippet: str) -> str:
    """A snippet as one line of words: no think tags, no line breaks."""
    return " ".join(snippet.replace("<think>", " ").replace("</think>", " ").split())
