"""The EngineController drives a real engine process and reports everything as Qt signals on
the UI thread: start, load with progress, streamed chat, stop, a killed engine, restart."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, Sampling
from app.ui.engine_controller import EngineController

WAIT_MS = 60_000


@pytest.fixture
def controller(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineController]:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    ctl = EngineController()
    yield ctl
    ctl.shutdown()


def tiny_load(model: Path) -> LoadParams:
    return LoadParams(model=str(model), placement=PlacementPlan(n_ctx=2048, n_threads=2))


def ask(text: str, max_tokens: int = 12) -> ChatParams:
    return ChatParams(messages=[ChatMessage("user", text)],
                      sampling=Sampling(temperature=0.0, max_tokens=max_tokens, ignore_eos=True))


def load(qtbot: QtBot, ctl: EngineController, model: Path) -> object:
    with qtbot.waitSignal(ctl.model_loaded, timeout=WAIT_MS) as loaded:
        ctl.load(tiny_load(model))
    return loaded.args[0]


def test_load_and_chat_arrive_as_signals_on_the_ui_thread(qtbot: QtBot, controller: EngineController,
                                                          tiny_moe_gguf: Path) -> None:
    states: list[str] = []
    progress: list[float] = []
    threads: set[str] = set()
    controller.state_changed.connect(states.append)
    controller.load_progress.connect(progress.append)
    controller.load_progress.connect(lambda _f: threads.add(threading.current_thread().name))
    with qtbot.waitSignal(controller.build_info, timeout=WAIT_MS) as info:
        result = load(qtbot, controller, tiny_moe_gguf)
    assert info.args[0].backends  # the engine said what it can use
    assert result.model.n_expert == 8 and controller.loaded is result
    assert states[:3] == ["starting", "idle", "loading"] and states[-1] == "idle"
    assert progress and progress[-1] == pytest.approx(1.0)

    tokens: list[str] = []
    controller.chat_token.connect(lambda _id, text: tokens.append(text))
    controller.chat_token.connect(lambda _id, _t: threads.add(threading.current_thread().name))
    with qtbot.waitSignal(controller.chat_finished, timeout=WAIT_MS) as finished:
        chat_id = controller.chat(ask("Hello experts"))
    assert finished.args[0] == chat_id
    chat_result = finished.args[1]
    assert chat_result.completion_tokens == 12 and "".join(tokens) == chat_result.text
    assert "generating" in states and controller.state == "idle"
    assert threads == {threading.main_thread().name}  # slots never run on a worker

    with qtbot.waitSignal(controller.stats, timeout=WAIT_MS) as pushed:
        pass
    assert pushed.args[0].model is not None and pushed.args[0].rss > 0


def test_stop_ends_an_answer_early(qtbot: QtBot, controller: EngineController,
                                   tiny_moe_gguf: Path) -> None:
    load(qtbot, controller, tiny_moe_gguf)
    chat_ids: list[int] = []
    controller.chat_token.connect(lambda chat_id, _t: controller.stop_chat(chat_id))
    with qtbot.waitSignal(controller.chat_finished, timeout=WAIT_MS) as finished:
        chat_ids.append(controller.chat(ask("Write a very long story", max_tokens=1500)))
    assert finished.args[0] == chat_ids[0]
    assert finished.args[1].finish_reason == "cancelled"
    assert finished.args[1].completion_tokens < 1500


def test_chat_without_a_model_fails_with_a_hint(qtbot: QtBot, controller: EngineController) -> None:
    controller.start()
    qtbot.waitUntil(lambda: controller.state == "idle", timeout=WAIT_MS)
    with qtbot.waitSignal(controller.chat_failed, timeout=WAIT_MS) as failed:
        controller.chat(ask("anyone there?"))
    assert failed.args[1] == "No model is loaded." and "Models page" in failed.args[2]


def test_a_bad_model_file_fails_the_load_with_cause_and_fix(qtbot: QtBot, controller: EngineController,
                                                            tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a model at all" * 64)
    with qtbot.waitSignal(controller.load_failed, timeout=WAIT_MS) as failed:
        controller.load(LoadParams(model=str(bad)))
    message, hint = failed.args
    assert "broken.gguf" in message and hint
    assert controller.state == "idle" and controller.loaded is None


def test_killed_engine_is_reported_and_restart_reloads_the_model(
        qtbot: QtBot, controller: EngineController, tiny_moe_gguf: Path) -> None:
    load(qtbot, controller, tiny_moe_gguf)
    assert controller.client is not None and controller.client.process is not None
    first_pid = controller.client.process.popen.pid
    with qtbot.waitSignal(controller.engine_died, timeout=WAIT_MS) as died:
        os.kill(first_pid, signal.SIGKILL)  # what the OOM killer does
    message, hint = died.args
    assert "killed by signal 9" in message and "out of memory" in hint
    assert controller.state == "died" and controller.loaded is None

    with qtbot.waitSignal(controller.chat_failed, timeout=WAIT_MS) as failed:
        controller.chat(ask("still there?"))
    assert failed.args[1]  # a chat on a dead engine fails at once, with a reason

    with qtbot.waitSignal(controller.model_loaded, timeout=WAIT_MS):
        controller.restart()
    assert controller.client is not None and controller.client.process is not None
    assert controller.client.process.popen.pid != first_pid
    with qtbot.waitSignal(controller.chat_finished, timeout=WAIT_MS) as finished:
        controller.chat(ask("and now?", max_tokens=4))
    assert finished.args[1].completion_tokens == 4


def test_restart_of_a_healthy_engine_is_not_a_death(qtbot: QtBot, controller: EngineController,
                                                    tiny_moe_gguf: Path) -> None:
    load(qtbot, controller, tiny_moe_gguf)
    deaths: list[str] = []
    controller.engine_died.connect(lambda message, _hint: deaths.append(message))
    with qtbot.waitSignal(controller.model_loaded, timeout=WAIT_MS):
        controller.restart()
    with qtbot.waitSignal(controller.model_unloaded, timeout=WAIT_MS):
        controller.unload()
    qtbot.wait(300)  # time for a wrongly reported death of the first engine to arrive
    assert deaths == [] and controller.state == "idle" and controller.loaded is None
