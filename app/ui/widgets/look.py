"""The app's spacing and type, in one place, and the parts every page uses to look alike: the
page's header (its name, a line on what it is for, its actions) and a muted label.

Colours come from the palette (app/ui/widgets/theme.py), never fixed, so that both themes
read; ``mix`` makes the in-between shades (a rail's background, a hover) from two roles.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QBoxLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

PAGE_MARGIN = 16  # around every page's content
SPACING = 10  # between the parts of a page
TITLE_SCALE = 1.45  # a page's name, against the app's font
HEADING_SCALE = 1.15  # a section's or an empty state's title


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """The colour ``t`` of the way from ``a`` to ``b`` (0: a, 1: b)."""
    return QColor.fromRgbF(a.redF() + (b.redF() - a.redF()) * t, a.greenF() + (b.greenF() - a.greenF()) * t,
                           a.blueF() + (b.blueF() - a.blueF()) * t)


def scaled_font(base: QFont, scale: float, bold: bool = True) -> QFont:
    font = QFont(base)
    font.setPointSizeF(base.pointSizeF() * scale)
    font.setBold(bold)
    return font


def muted(label: QLabel) -> QLabel:
    """Secondary text: the palette's placeholder colour, which both themes keep readable."""
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    return label


def page_layout(page: QWidget) -> QVBoxLayout:
    """The root layout of a page: the same margins and spacing on every page."""
    layout = QVBoxLayout(page)
    layout.setContentsMargins(PAGE_MARGIN, PAGE_MARGIN - 4, PAGE_MARGIN, PAGE_MARGIN)
    layout.setSpacing(SPACING)
    return layout


def tighten(layout: QBoxLayout) -> QBoxLayout:
    """A layout nested in a page: no margins of its own, the page's spacing."""
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(SPACING)
    return layout


class PageHeader(QWidget):
    """A page's name and what it is for, with room on the right for the page's actions."""

    def __init__(self, title: str, subtitle: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel(title)
        self.title.setFont(scaled_font(self.font(), TITLE_SCALE))
        self.subtitle = muted(QLabel(subtitle))
        self.subtitle.setWordWrap(True)
        self.subtitle.setVisible(bool(subtitle))
        words = tighten(QVBoxLayout())
        words.setSpacing(2)
        words.addWidget(self.title)
        words.addWidget(self.subtitle)
        self.actions = tighten(QHBoxLayout())
        row = tighten(QHBoxLayout(self))
        row.addLayout(words, 1)
        row.addLayout(self.actions)

    def add_action(self, widget: QWidget) -> QWidget:
        """Put a button (or any small widget) at the header's right end."""
        self.actions.addWidget(widget)
        return widget
