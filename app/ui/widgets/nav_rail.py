"""The navigation rail down the window's left side: one button a page, an icon over its name,
the current page marked (as LM Studio's and Jan's sidebars do)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QButtonGroup, QFrame, QToolButton, QVBoxLayout, QWidget

from app.ui.widgets.icons import icon
from app.ui.widgets.look import mix

WIDTH = 92
ICON_SIZE = 22


@dataclass(frozen=True)
class NavItem:
    name: str  # the page's name, shown under its icon
    icon: str  # an icon of app/ui/widgets/icons.py
    tip: str  # what the page is for, with its shortcut


class NavRail(QFrame):
    """Buttons for the pages, one checked at a time; ``page_chosen(name)`` when one is clicked."""

    page_chosen = Signal(str)

    def __init__(self, items: Sequence[NavItem], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("navRail")
        self.setFixedWidth(WIDTH)
        self.items = list(items)
        self.buttons: dict[str, QToolButton] = {}
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 12, 6, 12)
        layout.setSpacing(6)
        for item in self.items:
            button = QToolButton(self)
            button.setText(item.name)
            button.setToolTip(item.tip)
            button.setCheckable(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            button.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
            button.setFixedWidth(WIDTH - 12)
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.clicked.connect(lambda _checked=False, name=item.name: self._clicked(name))
            self._group.addButton(button)
            self.buttons[item.name] = button
            layout.addWidget(button)
        layout.addStretch(1)
        self._restyle()

    def current(self) -> str | None:
        """The page marked now."""
        return next((name for name, b in self.buttons.items() if b.isChecked()), None)

    def set_current(self, name: str) -> None:
        """Mark ``name`` as the page shown (no signal: the window already shows it)."""
        self.buttons[name].setChecked(True)

    def _clicked(self, name: str) -> None:
        self.page_chosen.emit(name)

    def _restyle(self) -> None:
        """Colours from the palette: the rail a shade off the window, the current page in the
        highlight colour; drawn again when the theme changes."""
        # the application's palette, not this widget's (which its own style sheet may tint)
        palette = QApplication.palette()
        window = palette.color(QPalette.ColorRole.Window)
        text = palette.color(QPalette.ColorRole.WindowText)
        highlight = palette.color(QPalette.ColorRole.Highlight)
        dark = window.lightness() < 128
        background = mix(window, text, 0.06 if dark else 0.04)
        border = mix(window, text, 0.14)
        quiet = mix(text, window, 0.3)
        hover = mix(background, text, 0.08)
        chosen = mix(background, highlight, 0.28 if dark else 0.16)
        chosen_text = mix(highlight, text, 0.45 if dark else 0.25)
        sheet = (
            f"#navRail {{ background: {background.name()}; border: none;"
            f" border-right: 1px solid {border.name()}; }}"
            f"#navRail QToolButton {{ border: none; border-radius: 10px; padding: 7px 0px 6px 0px;"
            f" color: {quiet.name()}; }}"
            f"#navRail QToolButton:hover {{ background: {hover.name()}; }}"
            f"#navRail QToolButton:checked {{ background: {chosen.name()}; color: {chosen_text.name()};"
            f" font-weight: 600; }}")
        if sheet == self.styleSheet():
            return  # a palette change that changed nothing here (or our own sheet's echo)
        self.setStyleSheet(sheet)
        for item in self.items:
            self.buttons[item.name].setIcon(icon(item.icon, quiet, ICON_SIZE, checked=chosen_text))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.PaletteChange:
            self._restyle()
        super().changeEvent(event)
