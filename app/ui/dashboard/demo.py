"""A Dashboard page filled from a real run: a small synthetic MoE model on this machine's
engine, a few answers of different lengths, everything the engine pushed recorded with its
arrival time and then replayed into the page (for screenshots and for a look by hand).

    python -m app.ui.dashboard.demo [out.png]
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from PySide6.QtWidgets import QWidget

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, Sampling, SubscribeParams
from app.synthetic import SyntheticSpec, write_synthetic_model
from app.ui.dashboard.page import DashboardPage
from app.ui.demo import demo_parts

# Bigger than the tests' "tiny" (a heatmap worth looking at), still written and loaded in
# well under a second; skewed routing, so hot experts stand out as real MoE models' do.
DEMO_SPEC = dataclasses.replace(SyntheticSpec.preset("tiny"), name="demo", n_layer=12,
                                n_expert=32, n_expert_used=4, routing_skew=0.6)
ANSWER_TOKENS = (400, 150, 700, 300)


@dataclass
class Recorded:
    """One event of a run: ``kind`` is the DashboardPage slot that takes ``data``."""

    at: float  # time.monotonic() when it arrived
    kind: str  # "set_loaded", "add_stats", "add_routing", "add_chat_result", "add_cpu_sample"
    data: Any


def record_run(model: Path, answer_tokens: tuple[int, ...] = ANSWER_TOKENS,
               idle_s: float = 0.5, interval_s: float = 0.25,
               placement: PlacementPlan | None = None,
               engine_env: dict[str, str] | None = None) -> list[Recorded]:
    """Start an engine, load ``model``, generate answers of the given lengths with idle
    gaps between them, and return everything the dashboard would have been given."""
    events: list[Recorded] = []  # list.append is atomic: callbacks and threads share it

    def record(kind: str) -> Any:
        return lambda data: events.append(Recorded(time.monotonic(), kind, data))

    done = threading.Event()

    def sample_cpu() -> None:
        psutil.cpu_percent(None)
        while not done.wait(0.5):
            events.append(Recorded(time.monotonic(), "add_cpu_sample", psutil.cpu_percent(None)))

    sampler = threading.Thread(target=sample_cpu, daemon=True)
    sampler.start()
    try:
        with EngineClient.spawn(env=engine_env) as engine:
            engine.subscribe(SubscribeParams(interval_s=interval_s),
                             on_stats=record("add_stats"), on_routing=record("add_routing"))
            # one thread is plenty for this model; on a busy 2-core machine two llama.cpp
            # threads were seen to crawl (a few t/s) after idle gaps between answers
            plan = placement or PlacementPlan(n_ctx=4096, n_threads=1)
            loaded = engine.load(LoadParams(model=str(model), placement=plan))
            record("set_loaded")(loaded)
            time.sleep(idle_s)
            for n, tokens in enumerate(answer_tokens):
                stream = engine.chat(ChatParams(
                    messages=[ChatMessage("user", f"Tell me about mixture of experts, part {n}")],
                    sampling=Sampling(max_tokens=tokens, ignore_eos=True, seed=n)))
                record("add_chat_result")(stream.result)
                time.sleep(idle_s)
    finally:
        done.set()
        sampler.join()
    return sorted(events, key=lambda e: e.at)


def replay(page: DashboardPage, events: list[Recorded]) -> None:
    """Give ``page`` the recorded events, at their recorded times, and draw."""
    page.reset()
    if events:
        page.restart_clock(events[0].at)  # the run's start is time 0
    for event in events:
        if event.kind == "set_loaded":
            page.set_loaded(event.data)
        else:
            getattr(page, event.kind)(event.data, at=event.at)
    page.redraw()


@functools.cache
def demo_events() -> list[Recorded]:
    """A real short run of a small synthetic model (about 5 s on a laptop), recorded once."""
    with tempfile.TemporaryDirectory(prefix="moedesk-demo-") as folder:
        (model,) = write_synthetic_model(Path(folder) / "demo-moe.gguf", DEMO_SPEC)
        return record_run(model)


def demo_page(parent: QWidget | None = None) -> DashboardPage:
    """The page after a real short run of a small synthetic model (the run is made once)."""
    state, engine = demo_parts(loaded=False)  # the run's own load is replayed into the page
    page = DashboardPage(state, engine, parent)
    state.setParent(page)
    engine.setParent(page)
    replay(page, demo_events())
    return page


def main(argv: list[str] | None = None) -> int:
    import sys

    from PySide6.QtWidgets import QApplication

    args = sys.argv[1:] if argv is None else argv
    app = QApplication.instance() or QApplication([])
    page = demo_page()
    page.resize(1400, 860)
    page.show()
    if args:
        app.processEvents()
        page.grab().save(args[0])
        print(f"wrote {args[0]}")
        code = 0
    else:
        code = app.exec()
    page.deleteLater()  # before the application goes: pyqtgraph items die with their views
    app.processEvents()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
