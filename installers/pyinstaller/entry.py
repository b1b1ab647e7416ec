"""The frozen app's entry point (PyInstaller bundles): one program in three roles.

    MoEDesk / MoEDesk.exe            the desktop app (app.ui.main:main)
    moedesk-cli / moedesk-cli.exe    the headless CLI (app.cli:main), by the executable's name
    <either> -m app.engine ARGS      the engine process

A frozen program has no Python to run ``-m``: ``sys.executable`` is the bundle's own program.
Answering ``-m app.engine`` here keeps app/engine/process.py's ``[sys.executable, "-m",
"app.engine", ...]`` working unchanged in a bundle (``--engine ARGS`` is the same, shorter).
"""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

ENGINE_PREFIXES = (["-m", "app.engine"], ["--engine"])


def main(argv: list[str] | None = None) -> int:
    """Run the engine, the CLI or the desktop app, as the command line and name say."""
    args = sys.argv[1:] if argv is None else argv
    for prefix in ENGINE_PREFIXES:
        if args[: len(prefix)] == prefix:
            from app.engine.__main__ import main as engine_main

            return engine_main(args[len(prefix):])
    if Path(sys.executable).stem.lower().endswith("-cli"):
        from app.cli import main as cli_main

        return cli_main(args)
    from app.ui.main import main as gui_main  # reads sys.argv itself, as a gui-script does

    return gui_main() or 0


if __name__ == "__main__":
    multiprocessing.freeze_support()  # harmless without multiprocessing; required with it
    raise SystemExit(main())
