"""How long the Qt event loop blocks while the Dashboard page follows a fast generation.

A real engine, driven by the app's EngineController, generates answer after answer (EOS
ignored) for ``--seconds``; every streamed token and every stats/routing push reaches the UI
thread as the controller's queued Qt signals, as in the app: pushes go to the DashboardPage
(wired as the main window wires it), which redraws its plots at its own fixed rate; tokens are
collected (``--chat-view``: appended to a text view, a stand-in for the chat page). A 5 ms
heartbeat timer on the UI thread records the gap between its ticks: a gap well over 5 ms means
the loop was blocked that long.
Target: the longest gap under 50 ms at 200+ t/s.

    python bench/ui_latency.py                    # tiny synthetic model (thousands of t/s)
    python bench/ui_latency.py --shape wide       # 48 layers x 128 experts: a big heatmap
    python bench/ui_latency.py --model some.gguf --threads 16

Runs offscreen unless QT_QPA_PLATFORM says otherwise (xcb, wayland: a real window).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QCoreApplication, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QPlainTextEdit  # noqa: E402

from app.engine.placement import PlacementPlan  # noqa: E402
from app.engine.protocol import (  # noqa: E402
    ChatMessage,
    ChatParams,
    LoadParams,
    Sampling,
)
from app.synthetic import SyntheticSpec, write_synthetic_model  # noqa: E402
from app.ui.app_state import AppState  # noqa: E402
from app.ui.dashboard import DashboardPage  # noqa: E402
from app.ui.engine_controller import EngineController  # noqa: E402

SHAPES = {
    "tiny": SyntheticSpec.preset("tiny"),
    # the routing shape of Qwen3-30B-A3B (48 layers, 128 experts, top-8) with tiny matrices
    "wide": dataclasses.replace(SyntheticSpec.preset("tiny"), name="wide", n_layer=48,
                                n_expert=128, n_expert_used=8, n_ff_exp=32, routing_skew=0.5),
}


class Heartbeat:
    """A precise timer on the UI thread; the gaps between its ticks show every block."""

    def __init__(self, interval_ms: int) -> None:
        self.gaps: list[float] = []  # wall time between ticks
        self.busy: list[float] = []  # the UI thread's CPU time between ticks
        self.process: list[float] = []  # all this process's threads' CPU time between ticks
        self._last: tuple[float, float, float] | None = None
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = (time.perf_counter(), time.thread_time(), time.process_time())
        if self._last is not None:
            self.gaps.append(now[0] - self._last[0])
            self.busy.append(now[1] - self._last[1])
            self.process.append(now[2] - self._last[2])
        self._last = now

    def start(self) -> None:
        self.gaps.clear()
        self.busy.clear()
        self.process.clear()
        self._last = None
        self.timer.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF model (default: a synthetic one)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny",
                        help="synthetic model to write when no --model is given")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to measure")
    parser.add_argument("--tokens", type=int, default=3000, help="tokens per answer")
    parser.add_argument("--threads", type=int, default=1,
                        help="engine threads (1 leaves a core to the UI on a small machine)")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--push-interval", type=float, default=0.25,
                        help="engine stats/routing push interval, s (the app's default)")
    parser.add_argument("--heartbeat-ms", type=int, default=5)
    parser.add_argument("--gpu-layers", type=int, default=-1, help="n_gpu_layers")
    parser.add_argument("--chat-view", action="store_true",
                        help="also append every token to a QPlainTextEdit (a stand-in for the "
                             "chat page, whose own cost this then includes)")
    args = parser.parse_args(argv)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="moedesk-ui-latency-") as folder:
        model = args.model
        if model is None:
            (model,) = write_synthetic_model(Path(folder) / f"{args.shape}.gguf",
                                             SHAPES[args.shape])
        controller = EngineController(log_path=Path(folder) / "engine.log",
                                      stats_interval_s=args.push_interval)
        try:
            return measure(app, controller, model, args)
        finally:
            controller.shutdown()


def measure(app: QCoreApplication, controller: EngineController, model: Path,
            args: argparse.Namespace) -> int:
    """Load, then generate answer after answer through the controller, as the app does."""
    state = AppState()
    state.follow(controller)  # the loaded model reaches the page through the app state, as in the app
    page = DashboardPage(state, controller)  # it connects itself to the controller's signals
    page.resize(1400, 860)
    page.show()
    chat_view = QPlainTextEdit() if args.chat_view else None
    if chat_view is not None:
        chat_view.resize(600, 800)
        chat_view.show()
    answer: list[str] = []  # without --chat-view the tokens are only collected

    redraw_s: list[float] = []
    redraw = page.redraw

    def timed_redraw() -> None:
        start = time.perf_counter()
        redraw()
        redraw_s.append(time.perf_counter() - start)

    page.redraw = timed_redraw  # type: ignore[method-assign]  # the page's timer calls this

    counts = {"tokens": 0, "answers": 0, "stats": 0, "routing": 0}
    problems: list[str] = []

    def on_token(_chat_id: int, text: str) -> None:
        counts["tokens"] += 1
        if chat_view is not None:
            chat_view.insertPlainText(text)
        else:
            answer.append(text)

    controller.chat_token.connect(on_token)
    controller.stats.connect(lambda _s: counts.__setitem__("stats", counts["stats"] + 1))
    controller.routing.connect(lambda _r: counts.__setitem__("routing", counts["routing"] + 1))

    params = ChatParams(messages=[ChatMessage("user", "Tell me everything about experts.")],
                        sampling=Sampling(max_tokens=args.tokens, ignore_eos=True))
    running = {"on": True, "chat": 0}

    def next_answer() -> None:
        if running["on"]:
            answer.clear()  # a new answer, as a new message would be
            if chat_view is not None:
                chat_view.clear()
            running["chat"] = controller.chat(params)

    def finished(_chat_id: int, _result: object) -> None:
        counts["answers"] += 1
        next_answer()

    def give_up(message: str, hint: str = "") -> None:
        problems.append(f"{message} {hint}".strip())
        stop()

    controller.chat_finished.connect(finished)
    controller.chat_failed.connect(lambda _id, message, hint: give_up(message, hint))
    controller.load_failed.connect(give_up)
    controller.engine_died.connect(give_up)

    heartbeat = Heartbeat(args.heartbeat_ms)
    marks: dict[str, float | dict[str, int]] = {}

    def start_measuring() -> None:  # after a second of warm-up
        heartbeat.start()
        redraw_s.clear()
        marks["start"] = time.perf_counter()
        marks["counts"] = dict(counts)
        QTimer.singleShot(int(args.seconds * 1000), stop)

    def stop() -> None:
        marks["end"] = time.perf_counter()
        marks["end_counts"] = dict(counts)
        heartbeat.timer.stop()
        running["on"] = False
        controller.stop_chat(running["chat"])
        app.quit()

    def loaded() -> None:
        next_answer()
        QTimer.singleShot(1000, start_measuring)

    controller.model_loaded.connect(lambda _result: loaded())
    placement = PlacementPlan(n_ctx=args.n_ctx, n_threads=args.threads,
                              n_gpu_layers=args.gpu_layers)
    controller.load(LoadParams(model=str(model), placement=placement))
    app.exec()
    if problems or "counts" not in marks:
        print("could not measure: " + ("; ".join(problems) or "the model did not load"),
              file=sys.stderr)
        return 2

    elapsed = float(marks["end"]) - float(marks["start"])  # type: ignore[arg-type]
    before, after = marks["counts"], marks["end_counts"]
    delta = {k: after[k] - before[k] for k in counts}  # type: ignore[index]
    gaps_ms = np.array(heartbeat.gaps) * 1000.0
    busy_ms = np.array(heartbeat.busy) * 1000.0
    redraw_ms = np.array(redraw_s) * 1000.0
    tps = delta["tokens"] / elapsed
    info = controller.loaded.model if controller.loaded else None
    print(f"model: {info.name if info else model} ({info.n_layer if info else '?'} layers, "
          f"{info.n_expert if info else '?'} experts, top-{info.n_expert_used if info else '?'}); "
          f"platform: {QApplication.platformName()}")
    print(f"measured {elapsed:.1f} s: {delta['tokens']} tokens streamed to the UI thread "
          f"({tps:.0f} t/s), {delta['answers']} answers, {delta['stats']} stats and "
          f"{delta['routing']} routing pushes")
    print(f"heartbeat every {args.heartbeat_ms} ms: {len(gaps_ms)} ticks; gap max "
          f"{gaps_ms.max():.1f} ms, p99 {np.percentile(gaps_ms, 99):.1f} ms, median "
          f"{statistics.median(gaps_ms):.1f} ms; gaps over 50 ms: {(gaps_ms > 50).sum()}")
    # a long gap with little CPU time on the UI thread: the thread was not running (other
    # processes on the cores, or another thread holding the GIL), not busy with our work
    print(f"UI thread CPU time within one gap: max {busy_ms.max():.1f} ms, p99 "
          f"{np.percentile(busy_ms, 99):.1f} ms; CPU cores {os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.1f}")
    longest = int(gaps_ms.argmax())
    print(f"the longest gap, {gaps_ms[longest]:.1f} ms: UI thread CPU "
          f"{busy_ms[longest]:.1f} ms, all threads of this process "
          f"{heartbeat.process[longest] * 1000:.1f} ms (the rest of the gap: the process did "
          "not run)")
    print(f"dashboard redraws: {len(redraw_ms)} ({len(redraw_ms) / elapsed:.1f}/s), "
          f"max {redraw_ms.max():.1f} ms, mean {redraw_ms.mean():.1f} ms")
    ok = gaps_ms.max() < 50.0 and tps >= 200
    print("PASS: the event loop never blocked 50 ms at 200+ t/s" if ok else
          "FAIL: " + ("a block of 50 ms or more" if gaps_ms.max() >= 50 else "under 200 t/s"))
    page.deleteLater()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
