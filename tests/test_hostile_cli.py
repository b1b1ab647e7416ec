"""The command line meets hostile conditions as a user would: a clear message and an exit code,
never a traceback; what nobody anticipated goes to a log the message names, readable by the
user only, as are the conversations and the library's index."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.hub.library import Library
from app.store import Store
from tests import hub_server
from tests.cli_testing import cli
from tests.hub_server import HubRepo, LargeFile, LocalHub

local_hub = hub_server.local_hub  # the fixture, where pytest looks for it


def test_an_unexpected_failure_is_one_line_and_a_private_log(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = cli("synth", str(blocker / "tiny.gguf"), home=tmp_path / "home")
    assert done.returncode == 70
    assert "Traceback" not in done.stderr + done.stdout
    log = tmp_path / "home" / "cache" / "logs" / "moedesk-cli.log"
    assert done.stderr.strip().startswith("error: ") and str(log) in done.stderr
    assert "Traceback (most recent call last)" in log.read_text()  # the details, for a report
    assert log.stat().st_mode & 0o777 == 0o600


def test_a_disk_that_fills_during_a_download_is_a_clear_error_and_the_bytes_stay(
        local_hub: LocalHub, tmp_path: Path) -> None:
    shards = [f"Q4_0/Tiny-Q4_0-{i:05d}-of-00002.gguf" for i in (1, 2)]
    local_hub.add("moedesk/Big-GGUF", HubRepo(files={p: LargeFile(3 << 20) for p in shards}))
    done = cli("download", "moedesk/Big-GGUF", "--quant", "Q4_0", "--dir", str(tmp_path / "models"),
               home=tmp_path / "home", file_size_limit=1 << 20)  # HF_ENDPOINT: the local Hub
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: Cannot write the download into" in done.stderr and "File too large" in done.stderr
    assert "start the same download again" in done.stderr
    parts = list((tmp_path / "models").rglob("*.part"))
    assert parts and all(p.stat().st_size == 1 << 20 for p in parts)  # kept, to resume from
    again = cli("download", "moedesk/Big-GGUF", "--quant", "Q4_0", "--dir", str(tmp_path / "models"),
                home=tmp_path / "home")  # space again: it resumes and completes
    assert again.returncode == 0, again.stderr


def test_conversations_settings_and_the_library_index_are_the_users_alone(tmp_path: Path,
                                                                         tiny_moe_gguf: Path) -> None:
    old_umask = os.umask(0o022)  # a usual umask: files 0644 unless made private
    try:
        store = Store(tmp_path / "data" / "moedesk.sqlite3")
        conversation = store.create_conversation("secret plans")
        store.add_message(conversation.id, "user", "what only I should read")
        store.set_setting("theme", "dark")
        files = [tmp_path / "data" / name for name in ("moedesk.sqlite3", "moedesk.sqlite3-wal",
                                                       "moedesk.sqlite3-shm")]
        assert all(f.exists() and f.stat().st_mode & 0o777 == 0o600 for f in files), \
            [oct(f.stat().st_mode) for f in files]
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
        store.close()
        library = Library(models_dir=tmp_path / "models", index_path=tmp_path / "data" / "library.json")
        library.import_path(tiny_moe_gguf)
        assert (tmp_path / "data" / "library.json").stat().st_mode & 0o777 == 0o600
        # a database an older version left readable by others is narrowed when opened
        (tmp_path / "data" / "moedesk.sqlite3").chmod(0o644)
        Store(tmp_path / "data" / "moedesk.sqlite3").close()
        assert (tmp_path / "data" / "moedesk.sqlite3").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old_umask)


def test_the_app_tells_an_unexpected_failure_in_a_line_and_logs_it(
        qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from PySide6.QtWidgets import QApplication, QMessageBox

    from app.ui.main import install_guard

    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    install_guard(QApplication.instance())  # type: ignore[arg-type]
    worker = threading.Thread(target=lambda: {}["missing key"], name="hostile-worker")
    worker.start()
    worker.join()

    def shown() -> QMessageBox:
        boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
        assert boxes
        return boxes[0]

    qtbot.waitUntil(lambda: bool(shown()), timeout=5000)
    box = shown()
    log = tmp_path / "cache" / "logs" / "moedesk.log"
    assert "KeyError" in box.text() and str(log) in box.text()
    assert "Traceback" in log.read_text() and "missing key" in log.read_text()
    box.close()
