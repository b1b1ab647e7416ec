"""``demo_page()``: the Models page filled with realistic data, for screenshots (no network).

Search results and a repo's quants are the Hub's real shapes (Qwen3-30B-A3B's quant sizes); the
verdicts are for a desktop with a 24 GB GPU and 64 GB of RAM; the library holds a real tiny
synthetic model, downloaded (with its completion marker) and imported, in a temporary folder.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

from PySide6.QtWidgets import QWidget

from app.hub.download import DownloadProgress
from app.hub.folder import LocalState, mark_complete, repo_folder
from app.hub.library import Library
from app.hub.quants import Quant, QuantFile
from app.hub.repo import RepoSummary
from app.ui.app_state import AppState
from app.ui.demo import demo_hardware
from app.ui.models.download_job import DownloadJob
from app.ui.models.page import ModelsPage

GB = 10**9
REPO = "unsloth/Qwen3-30B-A3B-GGUF"
# (quant, size in GB, shards, verdict on a 24 GB GPU + 64 GB RAM)
QUANTS = (
    ("UD-IQ1_S", 8.4, 1, "fits_on_gpu"),
    ("Q2_K", 11.3, 1, "fits_on_gpu"),
    ("Q3_K_M", 14.7, 1, "fits_on_gpu"),
    ("Q4_K_M", 18.6, 1, "fits_on_gpu"),
    ("Q5_K_M", 21.7, 1, "fits_with_expert_offload"),
    ("Q6_K", 25.1, 1, "fits_with_expert_offload"),
    ("Q8_0", 32.5, 1, "fits_with_expert_offload"),
    ("BF16", 61.1, 2, "fits_with_expert_offload"),
)


def demo_search() -> list[RepoSummary]:
    def day(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)

    return [
        RepoSummary("unsloth/DeepSeek-R1-GGUF", 1_204_311, 1090, day("2025-05-30"), False),
        RepoSummary(REPO, 873_540, 412, day("2025-07-02"), False),
        RepoSummary("unsloth/Qwen3-235B-A22B-Instruct-2507-GGUF", 402_118, 160, day("2025-07-24"), False),
        RepoSummary("unsloth/gpt-oss-120b-GGUF", 351_994, 420, day("2025-08-12"), False),
        RepoSummary("bartowski/Qwen_Qwen3-30B-A3B-GGUF", 198_452, 95, day("2025-05-01"), False),
        RepoSummary("unsloth/GLM-4.5-Air-GGUF", 150_873, 240, day("2025-08-08"), False),
        RepoSummary("meta-llama/Llama-4-Scout-17B-16E-Instruct-GGUF", 48_226, 77, day("2025-04-07"), True),
    ]


def demo_quants() -> list[Quant]:
    quants = []
    for name, size_gb, shards, _verdict in QUANTS:
        size = int(size_gb * GB)
        if shards == 1:
            files = (QuantFile(f"Qwen3-30B-A3B-{name}.gguf", size, None),)
        else:
            files = tuple(
                QuantFile(f"{name}/Qwen3-30B-A3B-{name}-{i:05d}-of-{shards:05d}.gguf", size // shards, None)
                for i in range(1, shards + 1)
            )
        quants.append(Quant(name, files, shards))
    return quants


def _fill_library(folder: Path) -> Library:
    """A real downloaded split model (with marker) and a real imported one, in ``folder``."""
    from app.synthetic import SyntheticSpec, write_synthetic_model

    library = Library(models_dir=folder / "models", index_path=folder / "library.json")
    root = repo_folder(library.models_dir, "moedesk/Tiny-MoE-GGUF")
    shards = write_synthetic_model(root / "Q4_0" / "tiny-moe.gguf", SyntheticSpec.preset("tiny", split=3))
    quant = Quant(
        "Q4_0",
        tuple(QuantFile(p.relative_to(root).as_posix(), p.stat().st_size, None) for p in shards),
        3,
    )
    mark_complete(root, "moedesk/Tiny-MoE-GGUF", quant)
    (mixtral,) = write_synthetic_model(
        folder / "elsewhere" / "tiny-mixtral.gguf", SyntheticSpec.preset("tiny-mixtral")
    )
    library.import_path(mixtral)
    (gone,) = write_synthetic_model(
        folder / "usb-disk" / "Mixtral-8x7B-Q4_0.gguf", SyntheticSpec.preset("tiny")
    )
    library.import_path(gone)
    gone.unlink()  # an imported model whose disk was unplugged: listed, not loadable
    return library


def demo_page(tab: str = "get", empty: bool = False) -> QWidget:
    """The page with search results, a repo's quants with verdicts and a download in progress
    (``tab="get"``), or the library (``tab="library"``); ``empty``: the library of a first
    start, nothing downloaded yet."""
    folder = tempfile.TemporaryDirectory(prefix="moedesk-demo-")
    root = Path(folder.name)
    library = (Library(models_dir=root / "models", index_path=root / "library.json") if empty
               else _fill_library(root))
    state = AppState()
    state.set_hardware(demo_hardware())
    page = ModelsPage(state, library=library, endpoint="https://huggingface.co", search_on_show=False)
    state.setParent(page)
    page._demo_folder = folder  # type: ignore[attr-defined]  # removed with the page
    if empty:
        page.tabs.setCurrentWidget(page.library_panel)
        return page

    find = page.find
    find.search_edit.setText("qwen3 moe")
    find.results_model.set_repos(demo_search())
    quants = demo_quants()
    find.repo_id = REPO
    find.repo_area.setCurrentWidget(find.repo_box)
    find.repo_label.setText(f"<b>{REPO}</b>: {len(quants)} quantization(s)")
    q6 = next(q for q in quants if q.name == "Q6_K")
    find.quant_model.set_quants(quants, {"Q6_K": LocalState(int(0.37 * q6.total_size), q6.total_size, False)})
    find.results_view.selectRow(1)  # the repo shown: already open, so not asked of the Hub
    for name, _size, _shards, verdict in QUANTS:
        find.quant_model.set_verdict(name, verdict)
    find.quant_view.selectRow(find.quant_model.recommend() or 0)

    job = DownloadJob(page.tasks, REPO, q6, library.models_dir, lambda: None, "https://huggingface.co", page)
    find.download_bar.attach(job, already=int(0.37 * q6.total_size))
    find.download_bar.show_progress(DownloadProgress(int(0.37 * q6.total_size), q6.total_size, 48.2e6, 327.0))
    job.state = "running"
    find.download_bar.show_state("running")
    find.job = job
    find._update_buttons()

    page.library_panel.model.set_models(library.models(include_unavailable=True))
    page.library_panel.view.selectRow(0)
    page.tabs.setCurrentIndex(1 if tab == "library" else 0)
    page.resize(1100, 760)
    return page
