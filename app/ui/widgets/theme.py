"""Light and dark themes: Qt's Fusion style with a palette (pages use palette roles only)."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

THEMES = ("system", "light", "dark")

_DARK = {
    QPalette.ColorRole.Window: "#2b2d30", QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#1f2023", QPalette.ColorRole.AlternateBase: "#32353a",
    QPalette.ColorRole.ToolTipBase: "#3c3f44", QPalette.ColorRole.ToolTipText: "#e6e6e6",
    QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#35383d",
    QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.BrightText: "#ff6b6b",
    QPalette.ColorRole.Highlight: "#3d7bd9", QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#7fb0ff", QPalette.ColorRole.PlaceholderText: "#9a9ea6",
}
_LIGHT = {
    QPalette.ColorRole.Window: "#efefef", QPalette.ColorRole.WindowText: "#1d1d1f",
    QPalette.ColorRole.Base: "#ffffff", QPalette.ColorRole.AlternateBase: "#f2f4f7",
    QPalette.ColorRole.ToolTipBase: "#ffffdc", QPalette.ColorRole.ToolTipText: "#1d1d1f",
    QPalette.ColorRole.Text: "#1d1d1f", QPalette.ColorRole.Button: "#e8e8e8",
    QPalette.ColorRole.ButtonText: "#1d1d1f", QPalette.ColorRole.BrightText: "#c01c28",
    QPalette.ColorRole.Highlight: "#2f6fd0", QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#1a5fb4", QPalette.ColorRole.PlaceholderText: "#6e7177",
}


def apply_theme(app: QApplication, theme: str) -> None:
    """"light" or "dark": Fusion with that palette; "system": Fusion with the platform's
    palette (Fusion everywhere, so the app looks the same on Linux, Windows and macOS)."""
    if theme not in THEMES:
        raise ValueError(f"unknown theme {theme!r}; choose one of {', '.join(THEMES)}")
    app.setStyle(QStyleFactory.create("Fusion"))
    if theme == "system":
        palette = app.style().standardPalette()
    else:
        palette = QPalette()
        for role, colour in (_DARK if theme == "dark" else _LIGHT).items():
            palette.setColor(role, QColor(colour))
        disabled = QColor("#7a7d83" if theme == "dark" else "#a0a0a0")
        for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText,
                     QPalette.ColorRole.WindowText):
            palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    app.setPalette(palette)
