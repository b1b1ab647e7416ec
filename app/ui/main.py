"""``moedesk``: start the desktop app."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from PySide6.QtWidgets import QApplication, QMessageBox

from app.store import THEME, Store, StoreError
from app.ui.engine_controller import EngineController
from app.ui.main_window import MainWindow, app_icon
from app.ui.widgets.theme import apply_theme


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication(list(argv) if argv is not None else sys.argv)
    app.setApplicationName("MoE Desk")
    app.setDesktopFileName("moedesk")
    app.setWindowIcon(app_icon())
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
