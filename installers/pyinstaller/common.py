"""What every MoE Desk PyInstaller bundle holds, shared by installers/windows/moedesk.spec and
installers/macos/moedesk.spec (both run this inside PyInstaller, with the build venv's packages).

The parts PyInstaller cannot find by following imports:
- llama.cpp's shared libraries. llama_cpp loads ``<its package folder>/lib/libllama.*`` with
  ctypes (and app/engine/ggml_backend.py loads libggml from there), so they must land in
  ``llama_cpp/lib`` inside the bundle, not beside the executable.
- app/engine/patches/*.patch (package data of app.engine), app/ui/icons/*.svg (of app.ui),
  app/synthetic/templates/*.jinja (of app.synthetic: ``moedesk-cli synth``),
  app/advisor/cuda_graphs.json (the memory model's GPU compute buffers) and resources/ (the
  app icon).
- app's submodules the engine and the CLI import lazily.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENTRY = Path(__file__).resolve().parent / "entry.py"
APP_NAME = "MoE Desk"
BUNDLE_ID = "org.moedesk.MoEDesk"
VERSION = importlib.metadata.version("moedesk")  # of the app installed in the build venv
# not used by MoE Desk, and large; tests and dev tools have no place in a user's bundle
EXCLUDES = ["tkinter", "pytest", "pytest_qt", "ruff", "openai", "IPython", "matplotlib"]


def bundle_inputs() -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    """(binaries, datas, hiddenimports) for PyInstaller's Analysis."""
    from PyInstaller.utils.hooks import collect_dynamic_libs, collect_submodules, copy_metadata

    binaries = collect_dynamic_libs("llama_cpp")  # keeps their llama_cpp/lib destination
    if not any("llama" in Path(src).name for src, _ in binaries):
        raise SystemExit("no llama.cpp libraries found in the build venv's llama_cpp: install "
                         "the engine first (python installers/install.py --venv ...)")
    patches = REPO / "app" / "engine" / "patches"
    datas = [(str(p), "app/engine/patches") for p in sorted(patches.glob("*.patch"))]
    icons = REPO / "app" / "ui" / "icons"  # package data of app.ui, read with importlib.resources
    datas += [(str(p), "app/ui/icons") for p in sorted(icons.glob("*.svg"))]
    templates = REPO / "app" / "synthetic" / "templates"
    datas += [(str(p), "app/synthetic/templates") for p in sorted(templates.glob("*.jinja"))]
    datas.append((str(REPO / "app" / "advisor" / "cuda_graphs.json"), "app/advisor"))
    datas.append((str(REPO / "resources"), "resources"))
    datas += copy_metadata("moedesk") + copy_metadata("llama-cpp-python")
    hidden = collect_submodules("app")
    return binaries, datas, hidden


def render_icon(out: Path, size: int = 1024) -> str:
    """The app icon as a PNG rendered from the SVG; PyInstaller turns it into .ico/.icns
    (with Pillow installed in the build venv)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    source = next(p for p in (REPO / "resources" / "moedesk.svg",
                              REPO / "resources" / "icons" / "moedesk.svg") if p.is_file())
    _app = QGuiApplication.instance() or QGuiApplication([])
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    QSvgRenderer(str(source)).render(painter)
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out)):
        raise SystemExit(f"could not write the icon {out}")
    return str(out)
