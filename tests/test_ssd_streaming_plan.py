"""Planning for a model larger than RAM: the RAM expert cache's size, its expected hit rate,
the decode speed the drive allows, the disk probe, and memory limits from cgroups."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from app.advisor.expert_cache import SKEW_EXPONENT
from app.advisor.planner import evaluate, plan_for
from app.advisor.streaming import TYPICAL_DISK, expected_hit_rate, skew_share
from app.engine.placement import PlacementPlan
from app.engine.protocol import EngineStats, StorageStats
from app.hardware import disk as disk_probe
from app.hardware import memory as hw_memory
from app.hardware.disk import DiskProbeError, DiskSpeed, disk_speed, measure_disk
from app.tune.measure import Measurement, Measurer
from app.tune.report import BenchRow, table_lines
from app.ui.dashboard.page import storage_lines
from tests.test_advisor import QWEN3_30B_Q4, QWEN3_30B_Q8, machine

GiB = 1024**3


def test_a_model_larger_than_ram_streams_through_a_ram_cache_sized_to_the_ram_left() -> None:
    plan = plan_for(QWEN3_30B_Q8, machine(None, ram_gib=16), 4096)
    assert plan.verdict == "fits_streaming_from_ssd"
    placement = plan.placement
    assert placement.expert_stream == "cache" and placement.repack is False
    budget = 16 * GiB - 4 * GiB  # RAM_HEADROOM stays free for the desktop
    assert 2 * GiB < placement.expert_stream_bytes < budget
    assert any("RAM cache of" in r and "expected in RAM" in r for r in plan.reasons)
    # more RAM: a larger cache
    bigger = plan_for(QWEN3_30B_Q8, machine(None, ram_gib=24), 4096).placement
    assert bigger.expert_stream_bytes > placement.expert_stream_bytes


def test_the_prediction_waits_for_the_ssd_and_a_faster_drive_decodes_faster() -> None:
    hardware = machine(None, ram_gib=16)
    slow_disk = replace(TYPICAL_DISK, random_read_bw=0.5e9)
    slow = plan_for(QWEN3_30B_Q8, hardware, 4096, disk=slow_disk)
    fast = plan_for(QWEN3_30B_Q8, hardware, 4096, disk=replace(TYPICAL_DISK, random_read_bw=6e9))
    assert slow.speed is not None and fast.speed is not None
    assert slow.speed.decode.high < fast.speed.decode.high
    assert any("SSD reads per token at 0.5 GB/s" in n for n in slow.speed.notes)
    # against the same placement with everything in RAM
    in_ram = evaluate(QWEN3_30B_Q8, machine(None, ram_gib=64),
                      replace(slow.placement, expert_stream="off"))
    assert in_ram.speed is not None and slow.speed.decode.high < in_ram.speed.decode.high
    unmeasured = plan_for(QWEN3_30B_Q8, hardware, 4096)
    assert unmeasured.speed is not None
    assert any("drive's speed not measured" in n for n in unmeasured.speed.notes)


def test_a_model_that_fits_ram_is_not_streamed() -> None:
    plan = plan_for(QWEN3_30B_Q4, machine(None, ram_gib=64), 4096)
    assert plan.verdict == "fits_in_ram"
    assert plan.placement.expert_stream == "off"


def test_too_little_ram_for_one_tokens_experts_falls_back_to_page_faults_and_says_so() -> None:
    plan = plan_for(QWEN3_30B_Q8, machine(None, ram_gib=6.2), 2048)
    assert plan.verdict == "fits_streaming_from_ssd"
    assert plan.placement.expert_stream == "off"
    assert any("page faults" in w for w in plan.warnings)


def test_the_expected_hit_rate_counts_repeats_and_skew_or_a_remembered_profile() -> None:
    # a quarter of the experts take 60% of the selections; 40% repeat the token before's
    assert skew_share(0.25) == pytest.approx(0.6)
    assert SKEW_EXPONENT == pytest.approx(0.368, abs=1e-3)
    assert expected_hit_rate(0.25) == pytest.approx(0.4 + 0.6 * 0.6)
    assert expected_hit_rate(1.0) == 1.0 and expected_hit_rate(0.0) == 0.0
    # measured on the dev machine (LRU cache, realistic routing): 58% at 12% and 87% at 38%
    assert abs(expected_hit_rate(15 / 128) - 0.58) <= 0.10
    assert abs(expected_hit_rate(48 / 128) - 0.87) <= 0.10
    # one layer where two of eight experts take every selection of 100: new tokens give them
    # less (chance and another text; app/advisor/expert_cache.py), one of them half that
    profile = [[50, 50, 0, 0, 0, 0, 0, 0]]
    assert 0.75 < skew_share(0.25, profile, [0]) < 1.0
    assert expected_hit_rate(0.25, profile, [0]) == pytest.approx(0.4 + 0.6 * skew_share(0.25, profile, [0]))
    assert skew_share(0.125, profile, [0]) == pytest.approx(skew_share(0.25, profile, [0]) / 2, abs=0.01)
    skewed = plan_for(QWEN3_30B_Q8, machine(None, ram_gib=16), 4096,
                      profile=[[1000] * 8 + [1] * 120 for _ in range(48)])
    # the profile's 8 experts take 98.5% of its selections: more than typical routing's 79%
    assert any("91% of the experts" in r for r in skewed.reasons)


def test_the_disk_probe_reads_a_file_and_caches_its_figures(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "model.gguf"
    data.write_bytes(os.urandom(40 << 20))
    measured = measure_disk(data, block_bytes=1_000_000, seconds=0.2)
    assert measured.block_bytes == 1_003_520  # rounded up to 4 KiB for O_DIRECT
    assert measured.seq_read_bw > 0 and measured.random_read_bw > 0 and measured.random_read_bw_1 > 0
    cache = tmp_path / "bandwidth.json"
    first = disk_speed(data, 1 << 20, cache=cache)

    def no_probe(*_: object, **__: object) -> DiskSpeed:
        raise AssertionError("measured again")

    monkeypatch.setattr(disk_probe, "measure_disk", no_probe)
    assert disk_speed(data, 1 << 20, cache=cache) == first  # same drive, similar block: cached
    with pytest.raises(AssertionError):
        disk_speed(data, 16 << 20, cache=cache)  # a block size 16x larger is measured anew
    small = tmp_path / "small.gguf"
    small.write_bytes(b"x" * 4096)
    with pytest.raises(DiskProbeError, match="too small"):
        measure_disk(small)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_cgroup_memory_limit_is_read_from_either_cgroup_version(tmp_path: Path, version: str) -> None:
    proc = tmp_path / "cgroup"
    if version == "v1":
        proc.write_text("12:cpu:/\n9:memory:/bench\n0::/\n")
        folder = tmp_path / "memory" / "bench"
        folder.mkdir(parents=True)
        (folder / "memory.limit_in_bytes").write_text(str(6 * GiB))
        (folder / "memory.usage_in_bytes").write_text(str(GiB))
    else:
        proc.write_text("0::/user.slice/bench\n")
        folder = tmp_path / "user.slice" / "bench"
        folder.mkdir(parents=True)
        (folder / "memory.max").write_text(str(6 * GiB))
        (folder / "memory.current").write_text(str(GiB))
    assert hw_memory.cgroup_memory_limit(proc, tmp_path) == (6 * GiB, GiB)
    (folder / ("memory.limit_in_bytes" if version == "v1" else "memory.max")).write_text(
        "9223372036854771712" if version == "v1" else "max")
    assert hw_memory.cgroup_memory_limit(proc, tmp_path) is None


def test_a_cgroup_limit_below_the_ram_is_the_machines_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hw_memory, "cgroup_memory_limit", lambda: (2 * GiB, GiB // 2))
    notes: list[str] = []
    found = hw_memory.detect_memory(Path("/"), True, notes)
    assert found is not None and found.total == 2 * GiB and found.available <= 1.5 * GiB
    assert "limited to 2.0 GiB" in notes[0]


def test_the_dashboard_shows_what_decoding_reads_from_the_ssd() -> None:
    stats = EngineStats(state="generating", model="m", decode_tps=1.0, prefill_tps=1.0,
                        tokens_generated=3, memory=[], rss=0)
    assert storage_lines(stats) == []
    stats.storage = StorageStats(bytes_per_token=0.6e9, read_bps=1.4e9, total_bytes=10**10,
                                 total_tokens=16, ram_hit_rate=0.56, stream_read_bps=1.45e9)
    assert storage_lines(stats) == [
        "SSD while decoding: 1.40 GB/s, 572 MiB per token (last steps)",
        "RAM expert cache: 56% of experts found; its reads ran at 1.45 GB/s",
    ]


def test_plans_keep_the_stream_settings_through_describe() -> None:
    plan = PlacementPlan(expert_stream="cache", expert_stream_bytes=3 * GiB)
    assert "experts streamed from the SSD through a 3.0 GiB RAM cache" in plan.describe()


def test_the_benchmark_report_shows_ssd_reads_when_there_are_any() -> None:
    measured = Measurement("autotuned", PlacementPlan(), decode_tps=2.0)
    Measurer._storage(measured, StorageStats(0, 0, 10**9, 10),
                      StorageStats(0, 0, 5 * 10**9, 18, ram_hit_rate=0.5))
    assert measured.ssd_bytes_per_token == 0.5e9 and measured.ram_hit_rate == 0.5
    assert measured.ssd_read_bps == 1e9
    assert measured.summary().endswith("SSD 0.50 GB/token at 1.00 GB/s, RAM expert cache 50% hits")
    lines = table_lines([BenchRow("autotuned", measured)], 48)
    assert lines[0].endswith("SSD GB/token  RAM hits") and lines[1].endswith("0.50          50%")
    in_ram = Measurement("classic", PlacementPlan(), decode_tps=2.0)
    assert "SSD" not in table_lines([BenchRow("classic", in_ram)], 48)[0]
