"""The app's own line icons (app/ui/icons/*.svg, package data), drawn in a palette's colour.

The SVGs stroke with ``currentColor``; each is drawn in the colour asked for, so the same icon
reads on the light and the dark theme (and follows a theme change when drawn again).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from PySide6.QtCore import QByteArray, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

NAMES = ("chat", "models", "advisor", "dashboard", "settings", "download")


@cache
def svg_text(name: str) -> str:
    """The icon's SVG source; KeyError for a name the app does not ship."""
    if name not in NAMES:
        raise KeyError(f"no icon {name!r}; the app has {', '.join(NAMES)}")
    return resources.files("app.ui").joinpath("icons", f"{name}.svg").read_text(encoding="utf-8")


def pixmap(name: str, colour: QColor, size: int) -> QPixmap:
    """``name`` drawn ``size`` logical pixels square in ``colour``, sharp on high-DPI screens."""
    app = QGuiApplication.instance()
    ratio = app.devicePixelRatio() if isinstance(app, QGuiApplication) else 1.0
    svg = svg_text(name).replace("currentColor", colour.name())
    renderer = QSvgRenderer(QByteArray(svg.encode()))
    image = QPixmap(QSize(round(size * ratio), round(size * ratio)))
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, image.width(), image.height()))
    painter.end()
    image.setDevicePixelRatio(ratio)
    return image


def icon(name: str, colour: QColor, size: int = 24, checked: QColor | None = None) -> QIcon:
    """A QIcon of ``name`` in ``colour``; with ``checked``, in that colour when checked."""
    result = QIcon(pixmap(name, colour, size))
    if checked is not None:
        result.addPixmap(pixmap(name, checked, size), QIcon.Mode.Normal, QIcon.State.On)
    return result
