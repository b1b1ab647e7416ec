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

import gguf
import numpy as np
from PySide6.QtWidgets import QWidget

from app.engine.synthetic_spec import SyntheticSpec, tensor_plan
from app.hardware import Hardware, detect

RECORDED_DESKTOP = Path(__file__).resolve().parents[3] / "tests" / "data" / "hardware" / "amd_gpu"


def write_model_header(path: Path, spec: SyntheticSpec) -> Path:
    """A GGUF with ``spec``'s metadata and tensor table whose data is a sparse hole: to
    gguf_info (and the advisor) the same as the real file, at a few hundred KB on disk.
    llama.cpp could not run it (no tokenizer, zero weights)."""
    writer = gguf.GGUFWriter(path, spec.arch)
    writer.add_name(f"MoE Desk synthetic {spec.name}")
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_key_length(spec.head_dim)
    writer.add_value_length(spec.head_dim)
    writer.add_expert_count(spec.n_expert)
    writer.add_expert_used_count(spec.n_expert_used)
    writer.add_expert_feed_forward_length(spec.n_ff_exp)
    writer.add_vocab_size(spec.n_vocab)
    total = 0
    for t in tensor_plan(spec):
        writer.add_tensor_info(t.name, t.shape[::-1], np.dtype(np.float32), t.nbytes, t.qtype)
        total += -(-t.nbytes // writer.data_alignment) * writer.data_alignment
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    fout.flush()
    os.ftruncate(fout.fileno(), fout.tell() + total)
    writer.close()
    return path


def recorded_desktop() -> Hardware:
    return detect(RECORDED_DESKTOP, nvml=False)


def demo_page(parent: QWidget | None = None) -> QWidget:
    """The page planning Qwen3-30B-A3B (Q8_0) at 32k tokens on the recorded 24 GB desktop."""
    from app.ui.advisor.page import AdvisorPage

    folder = Path(tempfile.mkdtemp(prefix="moedesk-advisor-demo-"))
    path = write_model_header(folder / "Qwen3-30B-A3B-Q8_0.gguf",
                              SyntheticSpec.preset("qwen3-30b-a3b", quant="Q8_0"))
    page = AdvisorPage(parent, hardware=recorded_desktop(), measure=False, n_ctx=32768)
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
