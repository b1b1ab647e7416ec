"""The Advisor page: a user picks a model, sees the plan, moves the sliders, and loads it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.advisor.memory import memory_by_device
from app.engine import routing_profiles
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import BuildInfo, DeviceInfo, LoadParams
from app.gguf.info import read_model
from app.hardware import Hardware, detect
from app.hardware.bandwidth import RamBandwidth
from app.hardware.h2d import HostCopyRates
from app.load_plan import plan_load
from app.synthetic import SyntheticSpec, write_synthetic_header
from app.tune.autotune import TuneResult, machine_id, remember, tune_key
from app.tune.measure import Measurement
from app.ui.advisor import AdvisorPage, demo_page
from app.ui.advisor.controls import GIB_UNIT, RuleError, parse_rules
from app.ui.advisor.page import VERDICTS
from app.ui.app_state import AppState
from app.ui.engine_controller import EngineController
from tests.test_advisor import machine
from tests.test_advisor_gpus import H100
from tests.ui_testing import app_parts

RECORDED = Path(__file__).parent / "data" / "hardware"
Parts = tuple[AppState, EngineController]


@pytest.fixture
def desktop() -> Hardware:
    """A recorded desktop: Ryzen 9 7950X, 64 GB, Radeon RX 7900 XTX with 23 GiB free."""
    return detect(RECORDED / "amd_gpu", nvml=False)


@pytest.fixture(scope="module")
def qwen3_30b_q8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Qwen3-30B-A3B shape in Q8_0 (32.8 GB), header only (the weights a sparse hole)."""
    folder = tmp_path_factory.mktemp("qwen3")
    return write_synthetic_header(folder / "Qwen3-30B-A3B-Q8_0.gguf",
                              SyntheticSpec.preset("qwen3-30b-a3b", quant="Q8_0"))


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Parts]:
    """The app state and the controller the page takes; the engine starts on the first Load."""
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    with app_parts() as made:
        yield made


def new_page(qtbot: QtBot, parts: Parts, hardware: Hardware | None,
             n_ctx: int = 2048, ram: RamBandwidth | None = None, probe_disk: bool = False) -> AdvisorPage:
    """The page on ``hardware`` (as the app state found it) and, when given, ``ram``'s speed."""
    state, controller = parts
    if hardware is not None:
        state.set_hardware(hardware)
    if ram is not None:
        state.set_ram(ram)
    page = AdvisorPage(state, controller, n_ctx=n_ctx, probe_disk=probe_disk)
    qtbot.addWidget(page)
    return page


def open_page(qtbot: QtBot, parts: Parts, model: Path, hardware: Hardware,
              n_ctx: int = 2048) -> AdvisorPage:
    page = new_page(qtbot, parts, hardware, n_ctx)
    page.set_model(model)
    qtbot.waitUntil(lambda: page.plan is not None, timeout=10_000)
    return page


def table(page: AdvisorPage) -> list[list[str]]:
    m = page.table_model
    return [[m.data(m.index(r, c)) for c in range(m.columnCount())] for r in range(m.rowCount())]


def test_the_page_shows_the_plan_for_the_selected_model(qtbot: QtBot, parts: Parts, tiny_moe_gguf: Path,
                                                        desktop: Hardware) -> None:
    page = open_page(qtbot, parts, tiny_moe_gguf, desktop)
    assert "qwen3moe, 4 layers, 8 experts (2 active)" in page.model_label.text()
    assert page.verdict.text() == "Fits on the GPU"
    assert [row[0] for row in table(page)] == ["CPU (RAM)", "ROCm0 (AMD GPU 0x744c)"]
    assert page.speed.text().startswith("Predicted: decode ")
    assert "RX" not in page.hardware_label.text() and "AMD Ryzen 9 7950X" in page.hardware_label.text()
    assert page.load_button.isEnabled()


def test_the_experts_slider_re_estimates_memory_and_speed_live(qtbot: QtBot, parts: Parts,
                                                               tiny_moe_gguf: Path,
                                                               desktop: Hardware) -> None:
    page = open_page(qtbot, parts, tiny_moe_gguf, desktop)
    on_gpu = page.plan
    assert on_gpu is not None and page.controls.experts.value() == 0
    page.controls.experts.setValue(4)  # what a drag to the right end does
    in_ram = page.plan
    assert in_ram.placement.experts_in_ram == "all"
    assert page.verdict.text() == "Fits, with routed experts in RAM"
    routed = sum(t.n_bytes for t in read_model(tiny_moe_gguf).tensors if t.tensor_class == "routed_experts")
    assert in_ram.device("CPU").weights == on_gpu.device("CPU").weights + routed
    assert in_ram.device("ROCm0").weights == on_gpu.device("ROCm0").weights - routed
    # the hops between the GPU and the CPU cost time on every layer
    assert in_ram.speed.decode.low < on_gpu.speed.decode.low
    assert in_ram.speed.decode.high < on_gpu.speed.decode.high
    assert page.controls.experts_label.text() == "all layers"
    page.controls.experts.setValue(2)
    assert page.plan.placement.experts_in_ram == 2
    assert "routed experts in RAM: first 2 layers" in page.placement_label.text()
    page.controls.replan.click()  # back to the advisor's choice
    assert page.plan.placement.experts_in_ram == "none" and page.controls.experts.value() == 0


def test_context_and_cache_type_change_the_plan(qtbot: QtBot, parts: Parts, qwen3_30b_q8: Path) -> None:
    page = open_page(qtbot, parts, qwen3_30b_q8, machine(24), n_ctx=32768)
    # the same answer as the planner's test: 18 layers' experts in RAM at 32k on 24 GB
    assert page.plan.experts_in_ram_layers == 18 and page.controls.experts.value() == 18
    # A q8_0 KV cache takes 34/64 of f16's 3.22 GB: the GPU's fixed part drops from 4.89 to
    # 3.38 GB, and (24.70 - 3.38) / 0.642 GB = 33 layers keep their experts: 15 in RAM.
    page.controls.cache.setCurrentText("q8_0")
    assert page.plan.placement.type_k == page.plan.placement.type_v == "q8_0"
    assert page.plan.experts_in_ram_layers == 15 and page.controls.experts.value() == 15
    # At 4,096 tokens the KV cache is 0.21 GB: fixed part 1.88 GB, 35 layers on the GPU.
    page.controls.ctx.setValue(4096)
    assert page.plan.placement.n_ctx == 4096 and page.plan.experts_in_ram_layers == 13
    page.controls.threads.setValue(3)
    page.controls.active.setValue(4)
    assert (page.plan.placement.n_threads, page.plan.placement.n_expert_used) == (3, 4)
    # too few experts in RAM for this GPU: the page says so and will not load it
    page.controls.experts.setValue(0)
    assert page.verdict.text() == "Does not fit"
    assert not page.load_button.isEnabled()
    assert any("too much" in row[6] for row in table(page))


def test_per_tensor_rules_come_first_and_bad_ones_are_explained(qtbot: QtBot, parts: Parts,
                                                                tiny_moe_gguf: Path,
                                                                desktop: Hardware) -> None:
    page = open_page(qtbot, parts, tiny_moe_gguf, desktop)
    page.controls.rules.setPlainText("blk\\.(=CPU")
    assert page.controls.rules_error.text().startswith("line 1: 'blk\\\\.(' is not a valid regex")
    assert not page.load_button.isEnabled()
    page.controls.rules.setPlainText("# the output head in RAM\n^output\\.=CPU")
    assert page.controls.rules_error.text() == ""
    assert page.plan.placement.overrides[0].pattern == "^output\\."
    output = sum(t.n_bytes for t in read_model(tiny_moe_gguf).tensors if t.name == "output.weight")
    assert page.plan.device("CPU").weights >= output
    with pytest.raises(RuleError, match="one device per rule"):
        parse_rules("ffn_.*_exps=CUDA0,CUDA1")


def test_a_gpu_the_build_cannot_drive_is_explained_and_the_plan_loads(
        qtbot: QtBot, parts: Parts, tiny_moe_gguf: Path, engine: EngineClient) -> None:
    server = dataclasses.replace(detect(RECORDED / "numa_server", nvml=False), gpus=[H100])
    page = open_page(qtbot, parts, tiny_moe_gguf, server)
    assert page.plan.gpus  # before the engine's word, the H100 is planned for
    build: BuildInfo = engine.info()  # this machine's real CPU-only build
    page.set_build_info(build)
    assert page.verdict.text() == "Fits in RAM (runs on the CPU)"
    assert "has no CUDA backend (it has: CPU)" in page.reasons.text()
    assert 'CMAKE_ARGS="-DGGML_CUDA=on" python3 installers/install.py' in page.reasons.text()
    assert "llama.cpp build: CPU (devices: CPU)" in page.hardware_label.text()
    _, controller = parts
    plan = page.plan
    with qtbot.waitSignal(controller.model_loaded, timeout=60_000):  # the app's engine loads it
        page.load_button.click()
    params = controller.last_load
    assert isinstance(params, LoadParams) and params.model == str(tiny_moe_gguf)
    assert params.placement == plan.placement and params.placement.n_gpu_layers == 0
    assert controller.last_plan is not None and controller.last_plan.source == "advisor"
    assert page.status.text().startswith("Loaded MoE Desk synthetic tiny in ")
    assert "routed experts: CPU" in page.status.text()
    assert page.load_button.isEnabled() and page.progress.isHidden()
    page.show_load_progress(0.5)  # a second load on its way
    assert not page.load_button.isEnabled() and page.progress.value() == 50
    page.show_load_failed("not enough memory for the KV cache", "Lower the context size.")
    assert page.status.text() == ("The model did not load: not enough memory for the KV cache\n"
                                  "Lower the context size.")


def test_a_file_that_is_not_a_model_says_why(qtbot: QtBot, parts: Parts,
                                             tmp_path: Path, desktop: Hardware) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello")
    page = new_page(qtbot, parts, desktop)
    page.set_model(bad)
    qtbot.waitUntil(lambda: page.model_label.text().startswith("Cannot read"), timeout=10_000)
    assert "is not a GGUF model" in page.model_label.text()
    assert page.plan is None and not page.load_button.isEnabled()


def test_the_demo_page_renders(qtbot: QtBot, tmp_path: Path) -> None:
    page = demo_page()
    qtbot.addWidget(page)
    page.resize(1200, 780)
    page.show()
    qtbot.waitExposed(page)
    assert page.plan is not None and page.plan.verdict == "fits_with_expert_offload"
    shot = tmp_path / "advisor.png"
    assert page.grab().save(str(shot)) and shot.stat().st_size > 10_000


def test_a_late_answer_from_a_worker_is_dropped(qtbot: QtBot, parts: Parts,
                                                tiny_moe_gguf: Path, skewed_moe_gguf: Path,
                                                desktop: Hardware, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtCore import QThreadPool

    page = new_page(qtbot, parts, desktop)
    page.set_model(tiny_moe_gguf)
    page.set_model(skewed_moe_gguf)  # the user picked another model before the first was read
    qtbot.waitUntil(lambda: page.plan is not None, timeout=10_000)
    QThreadPool.globalInstance().waitForDone(10_000)
    qtbot.wait(50)
    assert page.model is not None and page.model.shards == [skewed_moe_gguf]
    # a page closed while its worker reads a header: no errors later
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    closing = AdvisorPage(AppState(), parts[1])
    closing.set_model(tiny_moe_gguf)
    closing.deleteLater()
    qtbot.wait(50)
    assert QThreadPool.globalInstance().waitForDone(30_000)
    qtbot.wait(50)  # the workers' answers arrive here, for a page that is gone


def test_hot_experts_in_vram_take_vram_the_plan_makes_room_for(qtbot: QtBot, parts: Parts,
                                                               qwen3_30b_q8: Path) -> None:
    page = open_page(qtbot, parts, qwen3_30b_q8, machine(24), n_ctx=32768)
    assert page.plan.experts_in_ram_layers == 18 and not page.controls.hot_slots.isEnabled()
    # 16 experts of each RAM layer in VRAM: 16/128 of a layer's 0.642 GB = 0.080 GB a layer;
    # the plan puts more layers' experts in RAM to hold them, and the memory model counts them
    page.controls.hot_experts.setCurrentText("static")
    assert page.controls.hot_slots.isEnabled() and page.controls.hot_slots.value() == 16
    plan = page.plan
    assert plan.placement.expert_cache == "static" and plan.placement.expert_cache_slots == 16
    assert plan.experts_in_ram_layers > 18
    gpu = next(d for d in plan.memory if d.device != "CPU")
    packs = 16 * plan.experts_in_ram_layers * 0.642e9 / 128
    off = dataclasses.replace(plan.placement, expert_cache="off")
    gpu_off = next(d for d in memory_by_device(read_model(qwen3_30b_q8), off, [gpu.device])
                   if d.device != "CPU")
    assert gpu.weights - gpu_off.weights == pytest.approx(packs, rel=0.01)
    assert "hot experts in VRAM: 16 experts a layer (static)" in plan.placement.describe()
    # sized in GiB instead (as the CLI's --expert-cache-size 2GiB): spread over the RAM layers
    controls = page.controls
    assert controls.hot_gib.isHidden() and controls.hot_unit.isEnabled()
    controls.hot_unit.setCurrentText(GIB_UNIT)
    controls.hot_gib.setValue(2.0)
    assert not controls.hot_gib.isHidden() and controls.hot_slots.isHidden()
    by_size = page.plan
    assert by_size.placement.expert_cache_bytes == 2 * 2**30 and by_size.placement.expert_cache_slots == 0
    assert "hot experts in VRAM: 2.0 GiB (static)" in by_size.placement.describe()
    gpu = next(d for d in by_size.memory if d.device != "CPU")
    off = dataclasses.replace(by_size.placement, expert_cache="off")
    gpu_off = next(d for d in memory_by_device(read_model(qwen3_30b_q8), off, [gpu.device])
                   if d.device != "CPU")
    assert 1.8 * 2**30 <= gpu.weights - gpu_off.weights <= 2 * 2**30  # whole experts a layer
    page.controls.hot_experts.setCurrentText("off")
    assert page.plan.experts_in_ram_layers == 18 and page.plan.placement.expert_cache == "off"
    assert controls.hot_unit.isHidden() and controls.hot_gib.isHidden()


def test_a_model_larger_than_ram_streams_through_a_ram_cache_and_its_drive_is_probed(
        qtbot: QtBot, parts: Parts, qwen3_30b_q8: Path) -> None:
    ram = RamBandwidth(read_bw=40e9, read_bw_1=10e9, copy_bw_1=8e9, matmul_flops=300e9,
                       threads=8, buffer_bytes=0)
    page = new_page(qtbot, parts, machine(None, ram_gib=16), n_ctx=4096, ram=ram, probe_disk=True)
    page.set_model(qwen3_30b_q8)
    qtbot.waitUntil(lambda: page.plan is not None, timeout=10_000)
    assert page.verdict.text() == VERDICTS["fits_streaming_from_ssd"][0]
    assert page.plan.placement.expert_stream == "cache"
    assert "RAM cache of" in page.reasons.text()
    assert table(page)[0][6].endswith("rest from the SSD")
    # the model's drive is measured on a worker, and the prediction then rests on it
    qtbot.waitUntil(lambda: page.disk is not None, timeout=30_000)
    assert "Model's drive measured" in page.hardware_label.text()
    assert page.plan.speed is not None
    assert not any("drive's speed not measured" in n for n in page.plan.speed.notes)


def test_the_advisor_page_loads_the_autotuned_placement_as_file_load_does(
        qtbot: QtBot, parts: Parts,
        tiny_moe_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    hardware = machine(None, ram_gib=64)
    tuned = PlacementPlan(n_ctx=2048, n_threads=3, n_ubatch=1024, repack=False)
    key = tune_key(tiny_moe_gguf, machine_id(hardware.cpu.model, None), None)
    remember(key, TuneResult(best=Measurement("2 threads", tuned, decode_tps=50.0)))
    page = open_page(qtbot, parts, tiny_moe_gguf, hardware, n_ctx=2048)
    assert page.tuned == tuned and "autotuned on this machine" in page.placement_label.text()
    _, controller = parts
    with qtbot.waitSignal(controller.model_loaded, timeout=60_000):
        page.load_button.click()
    assert controller.last_load is not None and controller.last_load.placement == tuned
    assert controller.last_plan is not None and controller.last_plan.source == "autotuned"
    # File > Load and the CLI plan the same
    assert plan_load(tiny_moe_gguf, 2048, hardware, build=None).params.placement == tuned
    # another context was not tuned: the planner's own plan loads
    page.controls.ctx.setValue(1024)
    assert page.tuned is None and page.load_placement() == page.plan.placement


def skewed_page_with_cache_build(qtbot: QtBot, parts: Parts, model: Path) -> AdvisorPage:
    """The page for ``model`` on a 24 GB GPU with an engine that has the expert cache, the
    model's remembered routing skewed: per layer, 16 of the 128 experts take 70% of the
    selections."""
    n_layer = read_model(model).n_layer
    routing_profiles.remember(model, [[2800] * 16 + [150] * 112 for _ in range(n_layer)])
    page = new_page(qtbot, parts, machine(24), n_ctx=32768)
    page.set_build_info(BuildInfo(llama_cpp_python="0.3", backends=["CPU", "CUDA"], routing_patch=True,
                                  system_info="", expert_cache_patch=True,
                                  devices=[DeviceInfo("CUDA0", "RTX", "gpu", 24 * 1024**3, 24 * 1024**3)]))
    page.set_model(model)
    qtbot.waitUntil(lambda: page.plan is not None, timeout=10_000)
    return page


def test_hot_experts_left_to_the_planner_show_what_it_chose(qtbot: QtBot, parts: Parts,
                                                            qwen3_30b_q8: Path, tmp_path: Path) -> None:
    page = skewed_page_with_cache_build(qtbot, parts, qwen3_30b_q8)
    controls = page.controls
    assert controls.hot_experts.currentText() == "auto" and controls.settings().expert_cache is None
    planned = page.plan.placement
    assert planned.expert_cache == "static" and planned.expert_cache_slots > 0
    assert controls.hot_label.text() == (f"the planner's choice: static, "
                                         f"{planned.expert_cache_slots} experts a layer")
    assert controls.hot_slots.value() == planned.expert_cache_slots and not controls.hot_slots.isEnabled()
    page.resize(1200, 780)
    page.show()
    qtbot.waitExposed(page)
    assert page.grab().save(str(tmp_path / "advisor-hot-experts-auto.png"))

    controls.hot_experts.setCurrentText("off")  # off means none, not "the planner's choice"
    assert page.plan.placement.expert_cache == "off" and page.plan.experts_in_ram_layers == 18
    assert not any("hot experts in VRAM" in reason for reason in page.plan.reasons)
    assert controls.hot_slots.isHidden() and controls.hot_label.isHidden()
    controls.hot_experts.setCurrentText("auto")
    assert page.plan.placement == planned and controls.hot_label.isVisible()


def test_mmap_off_lets_the_planner_refresh_hot_experts_as_tokens_decode(qtbot: QtBot, parts: Parts,
                                                                        qwen3_30b_q8: Path,
                                                                        tmp_path: Path) -> None:
    # from the mapped file a dynamic cache's copies would each hold a token up, so the planner
    # weighs static caches only; off, the weights in RAM are in the GPU's pinned memory
    page = skewed_page_with_cache_build(qtbot, parts, qwen3_30b_q8)
    controls = page.controls
    assert controls.mmap.isChecked() and page.plan.placement.use_mmap
    assert page.plan.placement.expert_cache == "static"
    mapped_prefill = page.plan.speed.prefill.mid if page.plan.speed else 0.0

    controls.mmap.setChecked(False)
    plan = page.plan
    assert not plan.placement.use_mmap and not page.load_placement().use_mmap
    assert plan.placement.expert_cache == "dynamic"
    assert "refreshed as tokens decode" in page.reasons.text()
    assert plan.speed is not None and plan.speed.prefill.mid > mapped_prefill  # pinned copies
    page.resize(1200, 780)
    page.show()
    qtbot.waitExposed(page)
    assert page.grab().save(str(tmp_path / "advisor-mmap-off.png"))

    # asked for by hand with the mapped file, the page says what turning mmap off gives
    controls.mmap.setChecked(True)
    controls.hot_experts.setCurrentText("dynamic")
    assert page.plan.placement.expert_cache == "dynamic" and page.plan.placement.use_mmap
    assert "dynamic hot experts with mmap on" in page.reasons.text()
    controls.mmap.setChecked(False)
    assert "dynamic hot experts with mmap on" not in page.reasons.text()


def test_the_page_says_when_the_planner_caps_eager_copies_for_the_link(qtbot: QtBot, parts: Parts,
                                                                       tmp_path: Path) -> None:
    # a CPU bound by its cores (eager's extra hits pay) whose link to the GPU carries fewer
    # copies than eager makes within the CPU's part of a token: a refreshed cache asked for
    # by hand, mmap off, gets eager copies capped, and the page says why
    model = write_synthetic_header(tmp_path / "Qwen3-30B-A3B-Q4_0.gguf",
                                   SyntheticSpec.preset("qwen3-30b-a3b"))
    routing_profiles.remember(model, [[2800] * 16 + [150] * 112 for _ in range(read_model(model).n_layer)])
    link = HostCopyRates(gpu="RTX", pageable=9e9, pinned=25e9, mapped=9e9, copy_bytes=256 << 20)
    ram = RamBandwidth(read_bw=250e9, read_bw_1=7.7e9, copy_bw_1=10e9, matmul_flops=5e11, threads=8,
                       buffer_bytes=1 << 29, host_copy=link)
    page = new_page(qtbot, parts, machine(12), n_ctx=8192, ram=ram)
    page.set_build_info(BuildInfo(llama_cpp_python="0.3", backends=["CPU", "CUDA"], routing_patch=True,
                                  system_info="", expert_cache_patch=True,
                                  devices=[DeviceInfo("CUDA0", "RTX", "gpu", 12 * 1024**3, 12 * 1024**3)]))
    page.set_model(model)
    qtbot.waitUntil(lambda: page.plan is not None, timeout=10_000)
    controls = page.controls
    controls.mmap.setChecked(False)
    controls.hot_experts.setCurrentText("dynamic")
    controls.hot_slots.setValue(16)
    plan = page.plan.placement
    assert plan.expert_cache == "dynamic" and plan.expert_cache_policy == "eager"
    assert plan.expert_cache_uploads > 0
    assert f"eager expert copies, {plan.expert_cache_uploads} a token at most" in page.reasons.text()
    assert "longer on the link to the GPU" in page.reasons.text()
    page.resize(1200, 780)
    page.show()
    qtbot.waitExposed(page)
    shot = Path(os.environ.get("MOEDESK_SHOTS", str(tmp_path))) / "advisor-eager-capped.png"
    assert page.grab().save(str(shot))
