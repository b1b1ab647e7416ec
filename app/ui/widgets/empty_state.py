"""What a page (or a pane) shows when it has nothing to show: what is missing, what to do about
it, and a button that does it ("No model loaded. Load one on the Models page. [Open Models]")."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from app.ui.widgets.icons import pixmap
from app.ui.widgets.look import HEADING_SCALE, muted, scaled_font
from app.ui.widgets.theme import primary

ICON_SIZE = 44


class EmptyState(QWidget):
    """An icon, a title, a sentence and an optional action button, centred."""

    action_clicked = Signal()

    def __init__(self, icon: str, title: str = "", text: str = "", action: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.icon_name = icon
        self.icon = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.title = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.title.setFont(scaled_font(self.font(), HEADING_SCALE))
        self.text = muted(QLabel(alignment=Qt.AlignmentFlag.AlignCenter, wordWrap=True))
        # a fixed measure: a centred label's wrapped height is then known to the layout
        self.text.setFixedWidth(self.fontMetrics().averageCharWidth() * 62)
        self.button = primary(QPushButton())
        self.button.clicked.connect(self.action_clicked)
        layout = QVBoxLayout(self)
        layout.setSpacing(8)
        layout.addStretch(1)
        layout.addWidget(self.icon)
        layout.addWidget(self.title)
        layout.addWidget(self.text, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addSpacing(6)
        layout.addWidget(self.button, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addStretch(2)  # a little above the middle, where the eye looks first
        self.say(title, text, action)
        self._draw_icon()

    def say(self, title: str, text: str, action: str = "") -> None:
        """What to show now; no ``action``: no button."""
        self.title.setText(title)
        self.text.setText(text)
        self.text.setFixedHeight(self.text.heightForWidth(self.text.width()) if text else 0)
        self.button.setText(action)
        self.button.setVisible(bool(action))

    def _draw_icon(self) -> None:
        colour = self.palette().color(QPalette.ColorRole.PlaceholderText)
        self.icon.setPixmap(pixmap(self.icon_name, colour, ICON_SIZE))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.PaletteChange:
            self._draw_icon()
        super().changeEvent(event)
