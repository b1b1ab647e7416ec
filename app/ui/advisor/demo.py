"""An Advisor page with realistic data, for screenshots and a look by hand:

    python -m app.ui.advisor.demo [out.png]

The model is the synthetic Qwen3-30B-A3B shape written as a header with a sparse hole for
its weights (what the advisor reads is exactly what a real file's header holds; writing
17.7 GB of weights would add nothing to the page). The machine is a recorded desktop
(tests/data/hardware/amd_gpu: Ryzen 9 7950X, 64 GB, Radeon RX 7900 XTX 24 GB).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtWidgets import QWidget

from app.hardware import Hardware, detect
from app.synthetic import SyntheticSpec, write_synthetic_header

RECORDED_DESKTOP = Path(__file__).resolve().parents[3] / "tests" / "data" / "hardware" / "amd_gpu"


def recorded_desktop() -> Hardware:
    return detect(RECORDED_DESKTOP, nvml=False)


def demo_page(parent: QWidget | None = None, empty: bool = False) -> QWidget:
    """The page planning Qwen3-30B-A3B (Q8_0) at 32k tokens on the recorded 24 GB desktop
    (``empty``: before any model is chosen)."""
    from app.ui.advisor.page import AdvisorPage
    from app.ui.app_state import AppState
    from app.ui.engine_controller import EngineController

    state = AppState()
    state.set_hardware(recorded_desktop())
    engine = EngineController()
    page = AdvisorPage(state, engine, parent, n_ctx=32768, probe_disk=False)
    state.setParent(page)
    engine.setParent(page)
    if not empty:
        folder = Path(tempfile.mkdtemp(prefix="moedesk-advisor-demo-"))
        path = write_synthetic_header(folder / "Qwen3-30B-A3B-Q8_0.gguf",
                                      SyntheticSpec.preset("qwen3-30b-a3b", quant="Q8_0"))
        page.set_model(path)
        _wait_for_model(page)
    return page


def _wait_for_model(page: QWidget, timeout_s: float = 30.0) -> None:
    """Spin the event loop until the page has read its model's header (a worker does)."""
    import time

    from PySide6.QtCore import QCoreApplication, QThreadPool

    deadline = time.monotonic() + timeout_s
    while getattr(page, "model", None) is None and time.monotonic() < deadline:
        QThreadPool.globalInstance().waitForDone(50)
        QCoreApplication.processEvents()


if __name__ == "__main__":
    from PySide6.QtWidgets import QApplication

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication(sys.argv[:1])
    shown = demo_page()
    shown.resize(1200, 780)
    shown.show()
    app.processEvents()
    out = sys.argv[1] if len(sys.argv) > 1 else "advisor.png"
    shown.grab().save(out)
    print(out)
