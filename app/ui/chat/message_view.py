"""The conversation's messages in a scrolling column; follows the answer while it streams,
unless the user has scrolled up to read."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

from app.store import Message
from app.ui.chat.message_widgets import MessageWidget


class MessageView(QScrollArea):
    edit_requested = Signal(int)  # message id
    regenerate_requested = Signal()
    continue_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        column = QWidget()
        self._layout = QVBoxLayout(column)
        self._layout.setContentsMargins(8, 8, 8, 8)
        self._layout.setSpacing(8)
        self._layout.addStretch(1)
        self.setWidget(column)
        self._widgets: list[MessageWidget] = []
        self._follow = True
        self.verticalScrollBar().valueChanged.connect(self._user_scrolled)
        self.verticalScrollBar().rangeChanged.connect(self._range_changed)

    def set_messages(self, messages: list[Message]) -> None:
        for widget in self._widgets:
            self._layout.removeWidget(widget)
            widget.setParent(None)  # off screen now, not when deleteLater gets to it
            widget.deleteLater()
        self._widgets = []
        for message in messages:
            self.append(message)
        self._follow = True
        QTimer.singleShot(0, self.scroll_to_bottom)

    def append(self, message: Message) -> MessageWidget:
        widget = MessageWidget(message)
        widget.edit_requested.connect(self.edit_requested)
        widget.regenerate_requested.connect(self.regenerate_requested)
        widget.continue_requested.connect(self.continue_requested)
        self._layout.insertWidget(self._layout.count() - 1, widget)  # before the stretch
        self._widgets.append(widget)
        self._mark_regenerable()
        return widget

    def widgets(self) -> list[MessageWidget]:
        return list(self._widgets)

    def widget_for(self, message_id: int) -> MessageWidget | None:
        return next((w for w in self._widgets if w.message.id == message_id), None)

    def set_busy(self, busy: bool) -> None:
        """While an answer streams, regenerate and edit wait."""
        for widget in self._widgets:
            widget.edit_button.setEnabled(not busy)
        self._mark_regenerable(busy)

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _mark_regenerable(self, busy: bool = False) -> None:
        for widget in self._widgets:
            widget.set_regenerable(False)
        if self._widgets and self._widgets[-1].message.role == "assistant" and not busy:
            self._widgets[-1].set_regenerable(True)

    def _user_scrolled(self, value: int) -> None:
        self._follow = value >= self.verticalScrollBar().maximum() - 4

    def _range_changed(self, _low: int, high: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(high)
