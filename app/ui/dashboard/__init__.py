"""The Dashboard page: live engine performance (pyqtgraph) and the placement in use."""

from __future__ import annotations

from PySide6.QtWidgets import QWidget

from app.ui.dashboard.page import DashboardPage


def demo_page(parent: QWidget | None = None) -> DashboardPage:
    """The page filled from a real short run of a small synthetic model (see .demo)."""
    from app.ui.dashboard.demo import demo_page as build  # starts an engine: import on use

    return build(parent)


__all__ = ["DashboardPage", "demo_page"]
