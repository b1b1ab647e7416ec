"""Light and dark themes: Qt's Fusion style with a palette (pages use palette roles only), and
one style sheet made from that palette for what Fusion draws plainly: rounded buttons (a
primary one in the highlight colour), group boxes, tabs, table headers, progress bars."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QPushButton, QStyleFactory

from app.ui.widgets.look import mix

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
    app.setStyleSheet(style_sheet(palette))


def primary(button: QPushButton) -> QPushButton:
    """The one button of a page or pane that does the main thing (Send, Load, Download)."""
    button.setProperty("primary", True)
    button.setDefault(False)
    return button


def style_sheet(palette: QPalette) -> str:
    """The app's style sheet, in ``palette``'s colours."""
    role = QPalette.ColorRole
    window, text = palette.color(role.Window), palette.color(role.WindowText)
    base, button = palette.color(role.Base), palette.color(role.Button)
    highlight, on_highlight = palette.color(role.Highlight), palette.color(role.HighlightedText)
    dark = window.lightness() < 128
    border = mix(window, text, 0.22 if dark else 0.2).name()
    soft_border = mix(window, text, 0.12).name()
    hover = mix(button, text, 0.08).name()
    pressed = mix(button, text, 0.16).name()
    disabled_text = palette.color(QPalette.ColorGroup.Disabled, role.ButtonText).name()
    disabled_button = mix(button, window, 0.5).name()
    header = mix(base, text, 0.06).name()
    muted = mix(text, window, 0.35).name()
    chunk = mix(base, highlight, 0.45).name()
    return f"""
QPushButton {{ border: 1px solid {border}; border-radius: 6px; padding: 4px 12px;
    background: {button.name()}; color: {palette.color(role.ButtonText).name()}; }}
QPushButton:hover {{ background: {hover}; }}
QPushButton:pressed, QPushButton:checked {{ background: {pressed}; }}
QPushButton:disabled {{ color: {disabled_text}; background: {disabled_button}; border-color: {soft_border}; }}
QPushButton[primary="true"] {{ background: {highlight.name()}; color: {on_highlight.name()};
    border-color: {mix(highlight, text, 0.2).name()}; font-weight: 600; }}
QPushButton[primary="true"]:hover {{ background: {mix(highlight, on_highlight, 0.12).name()}; }}
QPushButton[primary="true"]:disabled {{ background: {mix(highlight, window, 0.6).name()};
    color: {mix(on_highlight, window, 0.35).name()}; border-color: {mix(highlight, window, 0.6).name()}; }}
QGroupBox {{ border: 1px solid {soft_border}; border-radius: 8px; margin-top: 1.3em;
    padding: 2px 2px 2px 2px; }}
QGroupBox::title {{ subcontrol-origin: margin; subcontrol-position: top left; left: 4px; top: 1px;
    padding: 0 2px; font-weight: 600; }}
QTabWidget::pane {{ border: none; border-top: 1px solid {soft_border}; top: -1px; }}
QTabBar {{ qproperty-drawBase: 0; }}
QTabBar::tab {{ padding: 6px 16px; border: none; border-bottom: 2px solid transparent;
    background: transparent; color: {muted}; }}
QTabBar::tab:selected {{ color: {text.name()}; border-bottom-color: {highlight.name()}; font-weight: 600; }}
QTabBar::tab:hover {{ color: {text.name()}; }}
QHeaderView::section {{ background: {header}; border: none; border-bottom: 1px solid {soft_border};
    border-right: 1px solid {soft_border}; padding: 4px 6px; font-weight: 600; }}
QProgressBar {{ border: 1px solid {soft_border}; border-radius: 5px; background: {base.name()};
    text-align: center; }}
QProgressBar::chunk {{ background: {chunk}; border-radius: 4px; }}
QListView#conversations {{ border: none; background: transparent; }}
QListView#conversations::item {{ padding: 6px 8px; border-radius: 6px; color: {text.name()}; }}
QListView#conversations::item:hover {{ background: {mix(window, text, 0.06).name()}; }}
QListView#conversations::item:selected {{ background: {mix(window, highlight, 0.3 if dark else 0.18).name()};
    color: {text.name()}; }}
"""
