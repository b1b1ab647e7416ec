"""The Models page, as a user drives it: real Qt event loop, the local Hub over HTTP, real GGUF files."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download
from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app import paths
from app.hub import token as hub_token
from app.store import FIRST_RUN_DONE, Store
from app.ui.app_state import AppState
from app.ui.demo import demo_hardware
from app.ui.engine_controller import EngineController
from app.ui.first_run.recommend import Recommendation
from app.ui.main_window import MainWindow
from app.ui.models import ModelsPage
from tests import hub_server
from tests.hub_server import HubRepo, LocalHub, MemoryKeyring, repo_of_files

local_hub = hub_server.local_hub
memory_keyring = hub_server.memory_keyring

REPO = "moedesk/Tiny-MoE-GGUF"
GATED = "meta/Gated-MoE-GGUF"
SECRET = "hf_GrantedToken0123456789"
WAIT_MS = 30_000  # a guard against hanging, not a speed assertion


@pytest.fixture
def hub(local_hub: LocalHub, split_moe_gguf: list[Path], tiny_moe_gguf: Path) -> LocalHub:
    """A 3-shard Q4_0 and a one-file Q8_0 (real tiny GGUF models), another repo, and a gated one."""
    files = {f"Q4_0/{p.name}": p for p in split_moe_gguf}
    files["tiny-moe-Q8_0.gguf"] = tiny_moe_gguf
    local_hub.add(REPO, repo_of_files(files, downloads=500, last_modified="2025-01-01T00:00:00.000Z"))
    local_hub.add("moedesk/Older-MoE-GGUF", repo_of_files({"old-Q4_0.gguf": tiny_moe_gguf}, downloads=90,
                                                          last_modified="2025-06-01T00:00:00.000Z"))
    local_hub.add(GATED, repo_of_files({"gated-Q4_0.gguf": tiny_moe_gguf}, gated=True,
                                       tokens=frozenset({SECRET}), downloads=10))
    local_hub.add("someone/not-gguf", HubRepo({"model.safetensors": b"x"}, downloads=10_000))
    return local_hub


@pytest.fixture
def page(qtbot: QtBot, hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         memory_keyring: MemoryKeyring) -> Iterator[ModelsPage]:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    widget = new_page(qtbot, hub, tmp_path)
    yield widget
    widget.shutdown()


def desktop_state() -> AppState:
    """The app state on the demo desktop (a 24 GB GPU, 64 GB of RAM): the verdicts' machine."""
    state = AppState(QCoreApplication.instance())
    state.set_hardware(demo_hardware())
    return state


def new_page(qtbot: QtBot, hub: LocalHub, tmp_path: Path) -> ModelsPage:
    widget = ModelsPage(desktop_state(), endpoint=hub.url, hf_cache_dir=tmp_path / "hf-cache",
                        search_on_show=False)
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    return widget


def open_repo(qtbot: QtBot, page: ModelsPage, text: str) -> None:
    """Type a repo name or URL and press Enter; wait for its quants and their verdicts."""
    page.find.search_edit.setText(text)
    qtbot.keyClick(page.find.search_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(page.find.quant_model.rows) > 0, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: all(r.verdict or r.verdict_note for r in page.find.quant_model.rows),
                    timeout=WAIT_MS)


def select_quant(page: ModelsPage, name: str) -> None:
    page.find.quant_view.selectRow(page.find.quant_model.row_of(name))


def visible_rows(model: object) -> list[list[str]]:
    return [[model.index(r, c).data() for c in range(model.columnCount())]  # type: ignore[attr-defined]
            for r in range(model.rowCount())]  # type: ignore[attr-defined]


def part_files() -> list[Path]:
    return list(paths.default_models_dir().rglob("*.part"))


def settled(hub: LocalHub) -> int:
    """Bytes served once the server has stopped writing to connections the client dropped."""
    while True:
        before = hub.bytes_served
        time.sleep(0.3)
        if hub.bytes_served == before:
            return before


def test_search_sorts_and_opening_a_repo_shows_quants_with_verdicts(qtbot: QtBot, page: ModelsPage) -> None:
    find = page.find
    find.search_edit.setText("moe")
    qtbot.mouseClick(find.search_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: find.results_model.rowCount() == 3, timeout=WAIT_MS)
    assert [r[0] for r in visible_rows(find.results_model)] == [REPO, "moedesk/Older-MoE-GGUF", GATED]
    assert visible_rows(find.results_model)[2][4] == "gated"

    find.sort_combo.setCurrentIndex(find.sort_combo.findData("last_modified"))
    qtbot.waitUntil(lambda: find.results_model.repos[0].repo_id == "moedesk/Older-MoE-GGUF", timeout=WAIT_MS)

    find.results_view.selectRow(1)  # the user clicks the repo
    qtbot.waitUntil(lambda: find.repo_id == REPO and len(find.quant_model.rows) == 2, timeout=WAIT_MS)
    # the recommendation comes once the advisor's worker has finished, after its last verdict
    qtbot.waitUntil(lambda: all(r.verdict for r in find.quant_model.rows)
                    and any(r.recommended for r in find.quant_model.rows), timeout=WAIT_MS)
    rows = visible_rows(find.quant_model)
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("Q8_0", "1", "fits on GPU"),
        ("★ Q4_0", "3", "fits on GPU (recommended)"),  # the largest that fits on the GPU
    ]
    assert find.selected_quant().name == "Q4_0"  # type: ignore[union-attr]
    assert find.download_button.isEnabled()


def test_a_repo_opens_by_url_and_bad_names_get_a_clear_message(
    qtbot: QtBot, page: ModelsPage, hub: LocalHub
) -> None:
    open_repo(qtbot, page, f"{hub.url}/{REPO}/tree/main/Q4_0")
    assert page.find.repo_id == REPO

    page.find.open_repo("moedesk/No-Such-Repo")
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=WAIT_MS)
    assert "Repository not found" in page.banner.message

    page.find.open_repo("not a repo")
    assert "neither owner/name nor a Hub URL" in page.banner.message


def test_two_uploads_of_one_quant_type_each_get_a_row_and_a_verdict(
    qtbot: QtBot, page: ModelsPage, hub: LocalHub, split_moe_gguf: list[Path], tiny_moe_gguf: Path
) -> None:
    """A Q8_0 as one flat file and again split in a Q8_0/ folder (unsloth's gpt-oss F16 layout): the
    verdicts arrive by quant name, so each upload needs its own."""
    files = {f"Q8_0/tiny-moe-Q8_0-{i:05d}-of-00003.gguf": p for i, p in enumerate(split_moe_gguf, start=1)}
    files["tiny-moe-Q8_0.gguf"] = tiny_moe_gguf
    hub.add("moedesk/Two-Uploads-GGUF", repo_of_files(files))

    open_repo(qtbot, page, "moedesk/Two-Uploads-GGUF")

    rows = visible_rows(page.find.quant_model)
    assert sorted((r[0].removeprefix("★ "), r[2], r[3].removesuffix(" (recommended)")) for r in rows) == [
        ("Q8_0 (Q8_0/)", "3", "fits on GPU"), ("Q8_0 (top level)", "1", "fits on GPU")]


def test_no_network_is_said_plainly(qtbot: QtBot, tmp_path: Path, memory_keyring: MemoryKeyring) -> None:
    with LocalHub() as gone:
        url = gone.url  # a port nothing listens on once the server is closed
    widget = ModelsPage(desktop_state(), endpoint=url, search_on_show=False, models_dir=tmp_path / "models")
    qtbot.addWidget(widget)
    widget.show()
    widget.find.search("qwen")
    qtbot.waitUntil(lambda: widget.banner.isVisible(), timeout=WAIT_MS)
    assert "No connection to the Hub" in widget.banner.message
    assert "Check the network" in widget.banner.message
    widget.shutdown()


def test_a_multi_shard_download_lands_in_the_library_loads_and_deletes(
    qtbot: QtBot, page: ModelsPage
) -> None:
    open_repo(qtbot, page, REPO)
    select_quant(page, "Q4_0")
    with qtbot.waitSignal(page.find.downloaded, timeout=WAIT_MS) as finished:
        qtbot.mouseClick(page.find.download_button, Qt.MouseButton.LeftButton)
    shards = finished.args[0]
    assert len(shards) == 3 and all(p.is_file() for p in shards)
    assert page.find.download_bar.bar.value() == page.find.download_bar.bar.maximum()

    library = page.library_panel
    qtbot.waitUntil(lambda: library.model.rowCount() == 1, timeout=WAIT_MS)
    assert visible_rows(library.model)[0][:7] == [
        f"{REPO}:Q4_0", "qwen3moe", "Q4_0", visible_rows(library.model)[0][3], "3", "downloaded", "ready"]
    qtbot.waitUntil(lambda: visible_rows(page.find.quant_model)[1][4] == "in library", timeout=WAIT_MS)
    assert page.find.download_button.text() == "In library" and not page.find.download_button.isEnabled()

    library.view.selectRow(0)
    with qtbot.waitSignal(page.load_requested, timeout=WAIT_MS) as load:
        qtbot.mouseClick(library.load_button, Qt.MouseButton.LeftButton)
    assert load.args == [shards[0]]

    qtbot.mouseClick(library.delete_button, Qt.MouseButton.LeftButton)
    box = library.confirm_box
    assert box is not None and box.isVisible() and "3 file(s)" in box.text()
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: library.model.rowCount() == 0, timeout=WAIT_MS)
    assert not any(p.exists() for p in shards)


def test_pause_keeps_the_part_files_and_resume_continues_them(
    qtbot: QtBot, page: ModelsPage, hub: LocalHub, split_moe_gguf: list[Path]
) -> None:
    total = sum(p.stat().st_size for p in split_moe_gguf)
    open_repo(qtbot, page, REPO)
    select_quant(page, "Q4_0")
    hub.bytes_per_s = 100_000  # slow enough to pause midway
    bar = page.find.download_bar
    qtbot.mouseClick(page.find.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bar.bar.value() > 0, timeout=WAIT_MS)
    assert " of " in bar.detail.text() and "/s" in bar.detail.text()  # bytes, speed, time left

    qtbot.mouseClick(bar.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.find.job.state == "paused", timeout=WAIT_MS)  # type: ignore[union-attr]
    kept = sum(p.stat().st_size for p in part_files())
    assert 0 < kept < total and "Paused at" in bar.detail.text()
    assert bar.resume_button.isEnabled() and not bar.pause_button.isEnabled()

    served = settled(hub)
    hub.bytes_per_s = None
    with qtbot.waitSignal(page.find.downloaded, timeout=WAIT_MS):
        qtbot.mouseClick(bar.resume_button, Qt.MouseButton.LeftButton)
    assert hub.bytes_served - served == total - kept  # continued from the .part files
    assert part_files() == []
    qtbot.waitUntil(lambda: page.library_panel.model.rowCount() == 1, timeout=WAIT_MS)


def test_a_paused_download_resumes_after_an_app_restart(
    qtbot: QtBot, page: ModelsPage, hub: LocalHub, tmp_path: Path
) -> None:
    open_repo(qtbot, page, REPO)
    select_quant(page, "Q4_0")
    hub.bytes_per_s = 100_000
    qtbot.mouseClick(page.find.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.find.download_bar.bar.value() > 0, timeout=WAIT_MS)
    page.shutdown()  # quitting the app pauses the download and waits for its worker
    assert part_files() and not page.tasks.busy or page.tasks.pool.activeThreadCount() == 0
    hub.bytes_per_s = None

    again = new_page(qtbot, hub, tmp_path)
    open_repo(qtbot, again, REPO)
    select_quant(again, "Q4_0")
    assert again.find.download_button.text() == "Resume download"
    assert visible_rows(again.find.quant_model)[1][4].endswith("% downloaded")
    with qtbot.waitSignal(again.find.downloaded, timeout=WAIT_MS):
        qtbot.mouseClick(again.find.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: again.library_panel.model.rowCount() == 1, timeout=WAIT_MS)
    again.shutdown()


def test_cancel_deletes_the_partial_download(qtbot: QtBot, page: ModelsPage, hub: LocalHub) -> None:
    open_repo(qtbot, page, REPO)
    select_quant(page, "Q4_0")
    hub.bytes_per_s = 100_000
    bar = page.find.download_bar
    qtbot.mouseClick(page.find.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bar.bar.value() > 0, timeout=WAIT_MS)

    qtbot.mouseClick(bar.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.find.job.state == "cancelled", timeout=WAIT_MS)  # type: ignore[union-attr]

    assert part_files() == [] and not (paths.default_models_dir() / "moedesk--Tiny-MoE-GGUF").exists()
    assert "partial files were deleted" in bar.detail.text()
    assert page.find.download_button.text() == "Download" and page.find.download_button.isEnabled()
    assert page.library_panel.model.rowCount() == 0


def test_a_gated_repo_asks_for_a_token_keeps_it_in_the_keyring_and_downloads(
    qtbot: QtBot, page: ModelsPage, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    open_repo(qtbot, page, GATED)
    assert visible_rows(page.find.quant_model)[0][3] == "needs access to check"
    assert "gated" in page.banner.message and page.banner.action.text() == "Sign in…"

    select_quant(page, "Q4_0")
    qtbot.mouseClick(page.find.download_button, Qt.MouseButton.LeftButton)
    sign_in = page.find.sign_in
    qtbot.waitUntil(lambda: sign_in.token_dialog is not None and sign_in.token_dialog.isVisible(),
                    timeout=WAIT_MS)
    dialog = sign_in.token_dialog
    assert "gated" in dialog.findChildren(type(page.banner.text))[0].text()  # type: ignore[union-attr]
    dialog.token_edit.setText(SECRET)  # type: ignore[union-attr]
    with qtbot.waitSignal(page.find.downloaded, timeout=WAIT_MS):
        dialog.accept()  # type: ignore[union-attr]

    assert memory_keyring.passwords == {(hub_token.SERVICE, hub_token.USERNAME): SECRET}
    qtbot.waitUntil(lambda: page.find.quant_model.rows[0].verdict == "fits_on_gpu", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: page.library_panel.model.rowCount() == 1, timeout=WAIT_MS)
    assert SECRET not in page.banner.message
    assert [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []


def test_disk_full_and_checksum_mismatch_are_explained(qtbot: QtBot, page: ModelsPage, hub: LocalHub) -> None:
    open_repo(qtbot, page, REPO)
    select_quant(page, "Q8_0")
    page.find.free_space = lambda _folder: 1000  # the free-space figure the download reads
    qtbot.mouseClick(page.find.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.find.job.state == "failed", timeout=WAIT_MS)  # type: ignore[union-attr]
    assert "Not enough disk space" in page.banner.message and "another disk" in page.banner.message

    page.find.free_space = None
    hub.corrupt["tiny-moe-Q8_0.gguf"] = 2  # wrong bytes twice: given up on
    qtbot.mouseClick(page.banner.action, Qt.MouseButton.LeftButton)  # "Resume"
    qtbot.waitUntil(lambda: "A shard failed its checksum" in page.banner.message, timeout=WAIT_MS)
    assert "sha256 differs" in page.banner.message and page.library_panel.model.rowCount() == 0


def test_files_folders_and_the_hf_cache_are_imported_into_the_library(
    qtbot: QtBot, page: ModelsPage, hub: LocalHub, tmp_path: Path, tiny_moe_gguf: Path
) -> None:
    library = page.library_panel
    page.library_panel.import_paths([tiny_moe_gguf])
    qtbot.waitUntil(lambda: library.model.rowCount() == 1, timeout=WAIT_MS)
    assert "Imported 1 model(s)" in page.banner.message

    hf_hub_download(REPO, "tiny-moe-Q8_0.gguf", cache_dir=tmp_path / "hf-cache", endpoint=hub.url)
    qtbot.mouseClick(library.import_hf_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: library.model.rowCount() == 2, timeout=WAIT_MS)
    assert visible_rows(library.model)[1][5] == "HF cache"
    assert library.selected().name.startswith(f"{REPO}:Q8_0@")  # type: ignore[union-attr]

    qtbot.mouseClick(library.delete_button, Qt.MouseButton.LeftButton)  # an import: only forgotten
    assert "stay where they are" in library.confirm_box.text()  # type: ignore[union-attr]
    qtbot.mouseClick(library.confirm_box.button(QMessageBox.StandardButton.Yes),  # type: ignore[union-attr]
                     Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: library.model.rowCount() == 1, timeout=WAIT_MS)
    assert list((tmp_path / "hf-cache").rglob("tiny-moe-Q8_0.gguf"))


def test_the_first_run_screens_recommendation_opens_in_the_models_page(
        qtbot: QtBot, hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        memory_keyring: MemoryKeyring) -> None:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))  # the local hub is HF_ENDPOINT
    store = Store.open_default()
    window = MainWindow(store, EngineController())
    qtbot.addWidget(window)
    window.show()
    window.show_first_run()
    dialog = window.first_run_dialog
    dialog.show_hardware(demo_hardware())
    dialog.recommendation = Recommendation("Tiny MoE", REPO, "Q4_0", 0.1, "it fits")
    qtbot.mouseClick(dialog.models_button, Qt.MouseButton.LeftButton)
    models = window.pages["Models"]
    assert isinstance(models, ModelsPage)
    assert window.stack.currentWidget() is models
    assert models.tabs.currentWidget() is models.find
    assert models.find.search_edit.text() == REPO
    # the repo's quants are listed, not the popular repos' search
    qtbot.waitUntil(lambda: len(models.find.quant_model.rows) > 0, timeout=WAIT_MS)
    assert models.find.repo_id == REPO
    assert store.setting(FIRST_RUN_DONE, False) is True
    models.shutdown()
    window.close()


def test_verdicts_asked_for_before_the_machine_is_known_follow_when_it_is(
        qtbot: QtBot, hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        memory_keyring: MemoryKeyring) -> None:
    """A repo opened while the app state is still detecting the machine waits for it: the
    hardware is found once for every page, never a second time by the Models page."""
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    state = AppState(QCoreApplication.instance())  # not detected yet
    widget = ModelsPage(state, endpoint=hub.url, hf_cache_dir=tmp_path / "hf-cache",
                        search_on_show=False)
    qtbot.addWidget(widget)
    widget.show()
    try:
        widget.find.search_edit.setText(REPO)
        qtbot.keyClick(widget.find.search_edit, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: len(widget.find.quant_model.rows) > 0, timeout=WAIT_MS)
        qtbot.wait(2000)  # long enough for a detection of its own and the verdicts after it
        assert not any(r.verdict for r in widget.find.quant_model.rows)
        state.set_hardware(demo_hardware())
        qtbot.waitUntil(lambda: all(r.verdict or r.verdict_note for r in widget.find.quant_model.rows),
                        timeout=WAIT_MS)
        assert any(r.verdict for r in widget.find.quant_model.rows)
    finally:
        widget.shutdown()
