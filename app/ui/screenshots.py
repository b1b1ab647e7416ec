"""Render every page, in the light and the dark theme, to PNGs, offscreen (for the README and
for reviews: look at each one after a change to the UI).

    python -m app.ui.screenshots docs/screenshots [--theme light|dark]

Each page comes from its package's ``demo_page()`` (realistic data: a recorded desktop, a real
short run of a synthetic model for the Dashboard), framed by the navigation rail as the window
shows it; the pages that can be empty are rendered empty too (what a new user sees first). The
main window is shown on its Chat page with the demo conversation, and bare, as on a first start.
Files are ``NAME-THEME.png``, reduced to 256 colours to stay small.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

import numpy as np  # noqa: E402
from PySide6.QtCore import Qt, QThreadPool  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QHBoxLayout, QWidget  # noqa: E402

SIZE = (1240, 800)
THEMES = ("light", "dark")


def settle(app: QApplication, rounds: int = 10) -> None:
    """Let layouts, deferred deletes and queued signals run before grabbing."""
    for _ in range(rounds):
        app.processEvents()
        app.sendPostedEvents(None, 0)


def few_colours(image: QImage, n: int = 256) -> QImage:
    """``image`` in its ``n`` most used colours. A UI has few colours besides the edges of its
    text, so the PNG is a third of the size and reads the same; Qt's own reduction maps to a
    fixed colour cube instead, which merges a dark theme's greys."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB32)
    pixels = np.frombuffer(rgb.constBits(), np.uint32, rgb.bytesPerLine() // 4 * rgb.height())
    colours, counts = np.unique(pixels, return_counts=True)
    table = [int(c) for c in colours[np.argsort(counts)[::-1][:n]]]
    return rgb.convertToFormat(QImage.Format.Format_Indexed8, table, Qt.ImageConversionFlag.ThresholdDither)


def save(widget: QWidget, path: Path) -> None:
    """The widget as drawn, in 256 colours."""
    if not few_colours(widget.grab().toImage()).save(str(path), "PNG", 0):
        raise OSError(f"could not write {path}")
    print(path)


def render(widget: QWidget, path: Path, app: QApplication, size: tuple[int, int] = SIZE) -> None:
    widget.resize(*size)
    widget.show()
    settle(app)
    save(widget, path)


def framed(page: QWidget, name: str) -> QWidget:
    """``page`` beside the navigation rail with ``name`` marked, as the window shows it."""
    from app.ui.main_window import NAVIGATION
    from app.ui.widgets.nav_rail import NavRail

    frame = QWidget()
    rail = NavRail(NAVIGATION, frame)
    rail.set_current(name)
    layout = QHBoxLayout(frame)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    layout.addWidget(rail)
    layout.addWidget(page, 1)
    return frame


def demo_pages() -> dict[str, tuple[str, Callable[[], QWidget]]]:
    """File name -> (the page's name in the rail, a function that builds it filled)."""
    from app.ui.advisor import demo_page as advisor
    from app.ui.chat import demo_page as chat
    from app.ui.dashboard import demo_page as dashboard
    from app.ui.dashboard.page import DashboardPage
    from app.ui.demo import demo_parts
    from app.ui.models import demo_page as models
    from app.ui.settings.page import demo_page as settings

    def empty_dashboard() -> QWidget:
        state, engine = demo_parts(loaded=False)
        return DashboardPage(state, engine)

    return {
        "chat": ("Chat", chat),
        "chat-empty": ("Chat", lambda: chat(loaded=False)),
        "models": ("Models", models),
        "models-library": ("Models", lambda: models(tab="library")),
        "models-empty": ("Models", lambda: models(tab="library", empty=True)),
        "advisor": ("Advisor", advisor),
        "advisor-empty": ("Advisor", lambda: advisor(empty=True)),
        "dashboard": ("Dashboard", dashboard),
        "dashboard-empty": ("Dashboard", empty_dashboard),
        "settings": ("Settings", settings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNGs (e.g. docs/screenshots)")
    parser.add_argument("--theme", choices=THEMES, action="append",
                        help="only this theme (may be given twice; default: both)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # the main window's store and logs go to a throwaway folder, not the user's
    os.environ["MOEDESK_HOME"] = tempfile.mkdtemp(prefix="moedesk-shots-")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    from app.ui.widgets.theme import apply_theme

    for theme in args.theme or THEMES:
        apply_theme(app, theme)
        for name, (rail_name, build) in demo_pages().items():
            frame = framed(build(), rail_name)
            render(frame, args.out / f"{name}-{theme}.png", app)
            frame.close()
            frame.deleteLater()
            settle(app)
        render_main_window(args.out, theme, app)
    return 0


def render_main_window(out: Path, theme: str, app: QApplication) -> None:
    """The window on the demo conversation with a model loaded, the window of a first start
    (nothing loaded, no conversations), and the first-run screen over it."""
    from app.store import FIRST_RUN_DONE, Store
    from app.ui.chat.demo import fill_demo_store
    from app.ui.demo import demo_hardware, demo_loaded
    from app.ui.engine_state import EngineState
    from app.ui.main_window import MainWindow

    home = Path(os.environ["MOEDESK_HOME"])
    for name, filled in (("main_window", True), ("main_window-empty", False)):
        os.environ["MOEDESK_HOME"] = str(home / name / theme)
        store = Store.open_default()
        store.set_setting(FIRST_RUN_DONE, True)
        if filled:
            fill_demo_store(store)
        window = MainWindow(store)  # its engine is never started: nothing to load here
        QThreadPool.globalInstance().waitForDone(60_000)  # this machine found: the demo's replaces it
        settle(app)
        window.state.set_hardware(demo_hardware())
        if filled:
            window.engine.on_state(EngineState.IDLE)
            window.state.set_loaded(demo_loaded())
            window.chat.open_conversation(store.conversations()[0].id)
        render(window, out / f"{name}-{theme}.png", app)
        if not filled:
            window.show_first_run()
            dialog = window.first_run_dialog
            settle(app, 40)
            dialog.adjustSize()
            settle(app)
            save(dialog, out / f"first_run-{theme}.png")
            dialog.reject()
        window.close()
        store.close()
    os.environ["MOEDESK_HOME"] = str(home)


if __name__ == "__main__":
    sys.exit(main())
