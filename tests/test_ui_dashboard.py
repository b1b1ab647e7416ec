"""The Dashboard page fed by a real engine generating with the tiny synthetic model.

Engine pushes and chat results reach the page as the app delivers them: the client's
callbacks (on its reader thread) emit Qt signals, queued to the UI thread's slots.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage, QPalette
from pytestqt.qtbot import QtBot

from app import synthetic
from app.engine.client import EngineClient
from app.engine.expert_cache import HOST_PACKS_ENV
from app.engine.placement import PlacementPlan
from app.engine.protocol import (
    ChatMessage,
    ChatParams,
    ChatResult,
    EngineStats,
    LoadParams,
    LoadResult,
    RoutingSnapshot,
    Sampling,
    SubscribeParams,
)
from app.synthetic import SyntheticSpec
from app.ui.app_state import AppState
from app.ui.dashboard import DashboardPage
from app.ui.dashboard.demo import record_run, replay
from app.ui.dashboard.feed import EngineFeed
from app.ui.dashboard.plots import nice_ceiling
from app.ui.dashboard.series import Ring, RoutingWindow
from app.ui.engine_controller import EngineController

PUSH_INTERVAL_S = 0.1


class Seen:
    """What the page was given, recorded by slots on the same signals (so in step with it)."""

    def __init__(self) -> None:
        self.stats: list[EngineStats] = []
        self.routing: list[RoutingSnapshot] = []
        self.results: list[ChatResult] = []


@pytest.fixture
def page(qtbot: QtBot) -> DashboardPage:
    page = DashboardPage(AppState(), EngineController())
    qtbot.addWidget(page)
    page.resize(1400, 860)
    page.show()
    return page


@pytest.fixture
def loaded(engine: EngineClient, tiny_moe_gguf: Path) -> LoadResult:
    return engine.load(LoadParams(model=str(tiny_moe_gguf),
                                  placement=PlacementPlan(n_ctx=4096, n_threads=1)))


@pytest.fixture
def feed(engine: EngineClient, page: DashboardPage, loaded: LoadResult) -> Iterator[Seen]:
    """The page told of the load, then wired to the engine's pushes and chat results."""
    page.set_loaded(loaded)
    seen = Seen()
    feed = EngineFeed()
    for signal, slot, record in ((feed.stats, page.add_stats, seen.stats.append),
                                 (feed.routing, page.add_routing, seen.routing.append),
                                 (feed.chat_finished, page.add_chat_result, seen.results.append)):
        signal.connect(slot)
        signal.connect(record)
    feed.subscribe(engine, PUSH_INTERVAL_S)
    seen.feed = feed  # type: ignore[attr-defined]
    yield seen
    # stop the pushes before the feed object goes: they would be emitted on a dead QObject
    engine.subscribe(SubscribeParams(stats=False, routing=False))


def generate(qtbot: QtBot, engine: EngineClient, seen: Seen, tokens: int) -> ChatResult:
    """One answer of exactly ``tokens`` tokens, streamed through the feed; returns when the
    page has the result and the routing snapshots that count all of it."""
    params = ChatParams(messages=[ChatMessage("user", "Tell me about routed experts")],
                        sampling=Sampling(max_tokens=tokens, ignore_eos=True, seed=1))
    feed: EngineFeed = seen.feed  # type: ignore[attr-defined]
    with qtbot.waitSignal(feed.chat_finished, timeout=120_000):
        feed.start_chat(engine, params)
    after = len(seen.routing)
    qtbot.waitUntil(lambda: len(seen.routing) >= after + 2, timeout=10_000)
    return seen.results[-1]


def curve_points(curve: object) -> np.ndarray:
    """The y values a curve was given at its last redraw (NaN gaps included); what it
    draws is these, clipped to the view and downsampled."""
    _x, y = curve.getOriginalDataset()  # type: ignore[attr-defined]
    return np.empty(0) if y is None else np.asarray(y)


def stop_pushes(qtbot: QtBot, engine: EngineClient) -> None:
    """End the subscription and let every queued event reach the page."""
    engine.subscribe(SubscribeParams(stats=False, routing=False))
    qtbot.wait(3 * int(PUSH_INTERVAL_S * 1000))


def test_a_live_answer_shows_on_every_plot(qtbot: QtBot, engine: EngineClient,
                                           page: DashboardPage, feed: Seen,
                                           loaded: LoadResult) -> None:
    result = generate(qtbot, engine, feed, tokens=400)
    qtbot.waitUntil(lambda: page.store.last("cpu_percent") is not None, timeout=5_000)
    page.redraw()

    plots = page.plots
    generating = [s for s in feed.stats if s.state == "generating"]
    assert generating, "the engine pushed no stats while it generated"
    decode = curve_points(plots.decode)
    assert np.count_nonzero(np.isfinite(decode)) == len(generating)
    assert list(curve_points(plots.answer_decode)) == [pytest.approx(result.decode_tps)]
    assert list(curve_points(plots.answer_prefill)) == [pytest.approx(result.prefill_tps)]
    ram = curve_points(plots.memory_curves["mem_used_RAM_bytes"])
    assert len(ram) == len(feed.stats) and (ram > 0).all()
    assert len(curve_points(plots.rss)) == len(feed.stats)
    cpu = curve_points(plots.cpu_curve)
    assert len(cpu) >= 1 and ((cpu >= 0) & (cpu <= 100)).all()

    # the heatmap: every selection since the load (the page saw it), layer x expert
    last = feed.routing[-1]
    assert sum(map(sum, last.counts)) > 0
    np.testing.assert_array_equal(page.heatmap_counts(), np.array(last.counts))
    assert plots.heatmap_plot.titleLabel.text.endswith(f"last 30 s: {sum(map(sum, last.counts)):,}")

    # hit rate: no GPU here, so every expert is read from RAM, and the page says so
    assert last.hit_rate == 0.0
    assert "Expert hit rate: 0% since load, last 30 s 0%" in page.now_label.text()
    hits = curve_points(plots.hit_total)
    hits = hits[np.isfinite(hits)]  # no value (a gap) before the first expert is used
    assert len(hits) and (hits == 0).all()
    x, misses = plots.layer_misses.opts["x"], plots.layer_misses.opts["height"]
    assert list(x) == last.layers and list(misses) == [100.0] * len(last.layers)
    assert list(plots.layer_hits.opts["height"]) == [0.0] * len(last.layers)

    # the time plots follow the data: every point in view, from 0
    (x0, x1), (y0, y1) = plots.throughput.viewRange()
    assert x0 == 0 and x1 >= page.store.data("decode_tps")[0][-1]
    assert y0 <= 0 and y1 >= np.nanmax(decode)

    assert f"Last answer: {result.completion_tokens} tokens" in page.now_label.text()
    # the placement in use: routed experts first, all in RAM
    model = page.placement
    assert model.headerData(0, Qt.Orientation.Vertical) == "routed experts"
    assert model.rowCount() == len({p.tensor_class for p in loaded.placement})
    assert model.headerData(0, Qt.Orientation.Horizontal) == "RAM"
    assert "all routed experts in RAM" in page.placement_label.text()


def test_after_reset_the_heatmap_counts_only_new_routing(qtbot: QtBot, engine: EngineClient,
                                                         page: DashboardPage, feed: Seen) -> None:
    generate(qtbot, engine, feed, tokens=200)
    page.reset()
    assert page.heatmap_counts().size == 0 or not page.heatmap_counts().any()
    assert len(curve_points(page.plots.decode)) == 0
    assert len(curve_points(page.plots.memory_curves["mem_used_RAM_bytes"])) == 0
    assert page.now_label.text().startswith("No engine figures yet")
    baseline_index = len(feed.routing)  # the first snapshot after the reset is the baseline

    generate(qtbot, engine, feed, tokens=300)
    page.redraw()
    baseline, last = feed.routing[baseline_index], feed.routing[-1]
    difference = np.array(last.counts) - np.array(baseline.counts)
    assert difference.sum() > 0
    np.testing.assert_array_equal(page.heatmap_counts(), difference)


def test_pause_freezes_the_plots_but_keeps_collecting(qtbot: QtBot, engine: EngineClient,
                                                      page: DashboardPage, feed: Seen) -> None:
    qtbot.waitUntil(lambda: len(curve_points(page.plots.rss)) >= 2, timeout=10_000)
    page.pause_button.click()
    assert page.paused and page.pause_button.text() == "Resume"
    assert page.paused_label.isVisibleTo(page)
    redraws, drawn = page.redraws, len(curve_points(page.plots.rss))
    collected = len(page.store.data("engine_rss_bytes")[0])
    qtbot.waitUntil(lambda: len(page.store.data("engine_rss_bytes")[0]) >= collected + 3,
                    timeout=10_000)
    qtbot.wait(2 * 1000 // 5)  # two redraw periods
    assert page.redraws == redraws
    assert len(curve_points(page.plots.rss)) == drawn

    page.pause_button.click()
    assert not page.paused and page.pause_button.text() == "Pause"
    assert len(curve_points(page.plots.rss)) == len(page.store.data("engine_rss_bytes")[0])
    assert page.redraws > redraws


def test_export_writes_the_series_as_csv_and_the_plots_as_png(
        qtbot: QtBot, engine: EngineClient, page: DashboardPage, feed: Seen,
        tmp_path: Path) -> None:
    result = generate(qtbot, engine, feed, tokens=300)
    qtbot.waitUntil(lambda: page.store.last("cpu_percent") is not None, timeout=5_000)
    stop_pushes(qtbot, engine)
    page.redraw()

    rows = page.export_csv(tmp_path / "series.csv")
    with open(tmp_path / "series.csv", newline="") as f:
        table = list(csv.DictReader(f))
    header = list(table[0])
    assert header[0] == "time_s"
    for column in ("decode_tps", "prefill_tps", "tokens_generated", "engine_rss_bytes",
                   "mem_used_RAM_bytes", "hit_rate", "hit_rate_window", "routed_tokens",
                   "answer_decode_tps", "answer_tokens", "cpu_percent"):
        assert column in header
    n_cpu = len(page.store.data("cpu_percent")[0])
    # a row per moment something arrived: each stats push, routing push, answer, CPU sample
    assert rows == len(table) == len(feed.stats) + len(feed.routing) + 1 + n_cpu
    times = [float(r["time_s"]) for r in table]
    assert times == sorted(times)
    assert sum(1 for r in table if r["tokens_generated"]) == len(feed.stats)
    assert sum(1 for r in table if r["decode_tps"]) == \
        sum(1 for s in feed.stats if s.state == "generating")
    assert [int(r["answer_tokens"]) for r in table if r["answer_tokens"]] == \
        [result.completion_tokens]
    assert [r["routed_tokens"] for r in table if r["routed_tokens"]][-1] == \
        str(feed.routing[-1].tokens)

    page.export_png(tmp_path / "plots.png")
    image = QImage(str(tmp_path / "plots.png"))
    assert not image.isNull() and image.width() >= page.plots.width()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots.png", "series.csv"]

    # a folder that does not exist: a clear error, and nothing half-written anywhere
    with pytest.raises(OSError):
        page.export_csv(tmp_path / "missing" / "series.csv")
    with pytest.raises(OSError):
        page.export_png(tmp_path / "missing" / "plots.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots.png", "series.csv"]


def test_demo_page_shows_a_real_run(qtbot: QtBot, tmp_path: Path) -> None:
    from app.ui.dashboard import demo_page

    page = demo_page()
    qtbot.addWidget(page)
    page.resize(1400, 860)
    page.show()
    assert len(curve_points(page.plots.answer_decode)) == 4  # the demo's four answers
    assert np.isfinite(curve_points(page.plots.decode)).any()
    assert page.heatmap_counts().shape == (12, 32) and page.heatmap_counts().sum() > 0
    assert page.placement.rowCount() > 0
    page.grab().save(str(tmp_path / "dashboard.png"))
    assert (tmp_path / "dashboard.png").stat().st_size > 0


# --- the data structures, with hand-made snapshots (no engine needed) ---------------------


def snapshot(counts: list[list[int]], hits: list[float | None],
             served: list[int] | None = None) -> RoutingSnapshot:
    layers = list(range(len(counts)))
    return RoutingSnapshot(n_layer=len(counts), n_expert=len(counts[0]), n_expert_used=1,
                           layers=layers, counts=counts, tokens=0, hit_rate=None,
                           layer_hit_rate=hits, served=served or [])


def test_routing_window_sums_recent_differences_and_survives_a_reload() -> None:
    window = RoutingWindow(window_s=2.0, max_window_s=10.0)
    window.restart(from_zero=True)  # a load: the first snapshot's counts all count
    window.add(0.5, snapshot([[3, 1], [0, 4]], [1.0, 0.0]))
    window.add(1.5, snapshot([[5, 1], [0, 6]], [1.0, 0.0]))
    np.testing.assert_array_equal(window.counts(), [[5, 1], [0, 6]])
    assert window.hit_rate() == pytest.approx(6 / 12)  # layer 0's experts are on the GPU
    window.add(2.9, snapshot([[5, 2], [0, 6]], [1.0, 0.0]))  # second 0 drops out of 2 s
    np.testing.assert_array_equal(window.counts(), [[2, 1], [0, 2]])
    window.window_s = 10.0  # bins up to max_window_s are kept, so a longer window has them
    np.testing.assert_array_equal(window.counts(), [[5, 2], [0, 6]])
    window.add(4.0, snapshot([[1, 0], [0, 0]], [1.0, None]))  # counts went back: reloaded
    np.testing.assert_array_equal(window.counts(), [[1, 0], [0, 0]])
    assert window.hit_rate() == 1.0

    window.restart(from_zero=False)  # a reset: the next snapshot is only the baseline
    window.add(5.0, snapshot([[9, 9], [9, 9]], [0.0, 0.0]))
    assert window.counts().sum() == 0 and window.hit_rate() is None


def test_the_windows_hit_rate_is_its_own_tokens_not_a_long_prompts_before_them() -> None:
    window = RoutingWindow(window_s=2.0, max_window_s=10.0)
    window.restart(from_zero=True)
    # a 100-token prompt, read from RAM (op offload), then 10 decoded tokens of which the
    # cache served 6 and 9 selections in the two layers
    window.add(0.5, snapshot([[60, 40], [50, 50]], [0.0, 0.0], served=[0, 0]))
    window.add(5.5, snapshot([[66, 44], [55, 55]], [6 / 110, 9 / 110], served=[6, 9]))
    assert window.hit_rate() == pytest.approx(15 / 20)  # since load it is 15 / 220
    np.testing.assert_allclose(window.window_layer_hit_rate(), [0.6, 0.9])
    rates, recent = window.shown_layer_hit_rate()
    assert recent and list(rates) == pytest.approx([0.6, 0.9])
    window.add(9.0, snapshot([[66, 44], [55, 55]], [6 / 110, 9 / 110], served=[6, 9]))  # idle
    assert window.hit_rate() is None
    rates, recent = window.shown_layer_hit_rate()  # nothing recent: the bars show since load
    assert not recent and list(rates) == pytest.approx([6 / 110, 9 / 110])


def test_a_one_token_answer_has_no_decode_speed_to_show(page: DashboardPage) -> None:
    page.add_chat_result(ChatResult(text="Yes", finish_reason="length", prompt_tokens=5,
                                    cached_tokens=0, completion_tokens=1, prefill_tps=300.0,
                                    decode_tps=0.0, ttft_s=0.1), at=1.0)
    page.redraw()
    (line,) = [t for t in page.now_label.text().splitlines() if t.startswith("Last answer")]
    assert line == "Last answer: 1 token, prefill 300 t/s, first token after 100 ms"
    _, marks = page.store.data("answer_decode_tps")
    assert len(marks) == 0  # no marker at 0 t/s
    assert page.store.last("answer_tokens") == 1.0


def test_axis_ends_are_round_numbers() -> None:
    assert [nice_ceiling(v) for v in (0.0, 0.7, 1.0, 1.2, 2.2, 3.0, 7.5, 1234.0)] == \
        [1.0, 1.0, 1.0, 2.0, 2.5, 5.0, 10.0, 2000.0]


def test_ring_keeps_the_newest_samples_in_order() -> None:
    ring = Ring(3)
    for i in range(5):
        ring.append(float(i), float(10 * i))
    t, v = ring.data()
    assert list(t) == [2.0, 3.0, 4.0] and list(v) == [20.0, 30.0, 40.0]
    ring.clear()
    assert len(ring) == 0 and len(ring.data()[0]) == 0


def test_plots_follow_the_palette(page: DashboardPage) -> None:
    dark = QPalette(page.palette())
    dark.setColor(QPalette.ColorRole.Base, QColor("#202124"))
    dark.setColor(QPalette.ColorRole.WindowText, QColor("#e8eaed"))
    page.setPalette(dark)
    assert page.plots.backgroundBrush().color() == QColor("#202124")
    assert page.plots.throughput.getAxis("left").textPen().color() == QColor("#e8eaed")



def test_the_heatmap_marks_the_experts_the_cache_holds_in_vram(page: DashboardPage,
                                                                skewed_moe_gguf: Path) -> None:
    # a real run with a dynamic hot-expert cache (packs in RAM: no GPU here), replayed
    placement = PlacementPlan(n_ctx=1024, n_threads=1, experts_in_ram="all", repack=False,
                              expert_cache="dynamic", expert_cache_slots=2, expert_cache_uploads=2)
    events = record_run(skewed_moe_gguf, (40,), idle_s=0.1, interval_s=0.1, placement=placement,
                        engine_env={HOST_PACKS_ENV: "1"})
    replay(page, events)
    routing = [e.data for e in events if e.kind == "add_routing"]
    assert routing and all(len(held) == 2 for held in routing[-1].cached)
    x, y = page.plots.cached_marks.getData()
    marked = sorted(zip(y.astype(int).tolist(), x.astype(int).tolist(), strict=True))
    assert marked == sorted((layer, e) for layer, held in zip(routing[-1].layers, routing[-1].cached,
                                                               strict=True) for e in held)
    assert "held in VRAM" in page.plots.heatmap_plot.titleLabel.text
    # the skewed model's two hot experts a layer are what a cache of two holds
    hot = synthetic.hot_experts(SyntheticSpec.preset("tiny", routing_skew=1.0))
    held_hot = [set(held) == set(hot[layer])
                for layer, held in zip(routing[-1].layers, routing[-1].cached, strict=True)]
    assert all(held_hot), held_hot
