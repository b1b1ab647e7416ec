"""Render every page and the main window to PNGs, offscreen (for the README and reviews).

    python -m app.ui.screenshots docs/screenshots

Each page comes from its package's ``demo_page()`` (realistic data) where it has one, else as
the app builds it. The main window is shown on its Chat page with the demo conversation.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is imported

from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

PAGES = {"chat": "app.ui.chat", "models": "app.ui.models", "advisor": "app.ui.advisor",
         "dashboard": "app.ui.dashboard", "settings": "app.ui.settings"}
SIZE = (1200, 780)


def settle(app: QApplication, rounds: int = 10) -> None:
    """Let layouts, deferred deletes and queued signals run before grabbing."""
    for _ in range(rounds):
        app.processEvents()
        app.sendPostedEvents(None, 0)


def page_factory(package: str) -> Callable[[], QWidget] | None:
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    return getattr(module, "demo_page", None)


def render(widget: QWidget, path: Path, app: QApplication) -> None:
    widget.resize(*SIZE)
    widget.show()
    settle(app)
    if not widget.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    print(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNGs (e.g. docs/screenshots)")
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # the main window's store and logs go to a throwaway folder, not the user's
    os.environ["MOEDESK_HOME"] = tempfile.mkdtemp(prefix="moedesk-shots-")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    from app.ui.widgets.theme import apply_theme

    apply_theme(app, args.theme)  # type: ignore[arg-type]
    missing = []
    for name, package in PAGES.items():
        factory = page_factory(package)
        if factory is None:
            missing.append(name)
            continue
        page = factory()
        render(page, args.out / f"{name}.png", app)
        page.close()
    render_main_window(args.out / "main_window.png", app)
    if missing:
        print(f"no demo_page() (package missing or without one): {', '.join(missing)}")
    return 0


def render_main_window(path: Path, app: QApplication) -> None:
    from app.store import FIRST_RUN_DONE, Store
    from app.ui.chat.demo import fill_demo_store
    from app.ui.main_window import MainWindow

    store = Store.open_default()
    store.set_setting(FIRST_RUN_DONE, True)
    fill_demo_store(store)
    window = MainWindow(store)  # its engine is never started: nothing to load here
    window.chat.open_conversation(store.conversations()[0].id)
    render(window, path, app)
    window.show_first_run()
    dialog = window.first_run_dialog
    settle(app, 40)
    dialog.adjustSize()
    settle(app)
    dialog.grab().save(str(path.with_name("first_run.png")))
    print(path.with_name("first_run.png"))
    window.close()


if __name__ == "__main__":
    sys.exit(main())
