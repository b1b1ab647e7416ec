"""``moedesk``: start the desktop app."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
import threading
from collections.abc import Sequence
from types import TracebackType

from PySide6.QtWidgets import QApplication, QMessageBox

from app import crash_log
from app.store import THEME, Store, StoreError
from app.ui.background import UiThreadPost
from app.ui.engine_controller import EngineController
from app.ui.main_window import MainWindow, app_icon
from app.ui.widgets.theme import apply_theme


def install_guard(app: QApplication) -> UiThreadPost:
    """The top-level guard: an exception nothing else caught (a slot, a worker thread) is told
    in one dialog line, its traceback in the log the line names; the app goes on."""
    to_ui = UiThreadPost(app)

    shown: set[QMessageBox] = set()  # a parentless dialog lives while Python holds it

    def show(message: str) -> None:  # not modal: the app goes on behind it
        box = QMessageBox(QMessageBox.Icon.Warning, "MoE Desk: something went wrong",
                          message[:1].upper() + message[1:])
        shown.add(box)
        box.finished.connect(lambda _result: shown.discard(box))
        box.show()

    def report(exc: BaseException, where: str) -> None:
        message = crash_log.describe(exc, "moedesk")
        logging.getLogger("moedesk.ui").error("unexpected failure in %s: %s", where, message)
        to_ui.post(show, message)  # on the UI thread, whichever thread failed

    def on_ui(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        report(exc.with_traceback(tb), "the user interface")

    def on_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            report(args.exc_value, f"thread {args.thread.name if args.thread else '?'}")

    sys.excepthook = on_ui
    threading.excepthook = on_thread
    return to_ui


def parse_args(argv: Sequence[str]) -> list[str]:
    """``moedesk --help`` and ``--version`` answer on the terminal (no window, no display
    needed); every other argument is Qt's (``-platform offscreen``, ``-style fusion``, ...)."""
    parser = argparse.ArgumentParser(
        prog="moedesk",
        description="MoE Desk: run giant Mixture-of-Experts language models on your own machine. "
                    "Starts the desktop app; Qt's own options (-platform, -style, ...) pass through.",
        epilog="The command-line tools (chat, serve, download, advise, bench): moedesk-cli --help")
    parser.add_argument("--version", action="version", version=f"MoE Desk {app_version()}")
    _, rest = parser.parse_known_args(list(argv[1:]))
    return [argv[0] if argv else "moedesk", *rest]


def app_version() -> str:
    try:
        return importlib.metadata.version("moedesk")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    qt_args = parse_args(list(argv) if argv is not None else sys.argv)  # exits on --help
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication(qt_args)
    app.setApplicationName("MoE Desk")
    app.setDesktopFileName("moedesk")
    app.setWindowIcon(app_icon())
    install_guard(app)
    try:
        store = Store.open_default()
    except StoreError as exc:
        QMessageBox.critical(None, "MoE Desk cannot start", f"{exc.message}\n\n{exc.hint}")
        return 1
    apply_theme(app, store.setting(THEME, "system"))
    controller = EngineController()
    window = MainWindow(store, controller)
    window.show()
    controller.start()  # the engine process starts while the user looks around
    window.maybe_show_first_run()
    code = app.exec()
    store.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
