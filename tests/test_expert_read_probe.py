"""The kernel probe (issue 19): llama.cpp's CPU kernels timed on routed experts by decoding in
the real engine, remembered for this machine, and read by the advisor's speed model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from app.engine.llama_params import default_threads
from app.hardware.bandwidth import ram_bandwidth
from app.hardware.expert_read import (
    CACHE_KEY,
    ExpertReadRate,
    cached_expert_read,
    record_expert_read,
)
from app.hardware.probe_cache import CACHE_FILE, cpu_key
from tests.cli_testing import cli


def test_probe_cpu_times_the_kernels_and_the_advisor_reads_the_rate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, scratch = tmp_path / "home", tmp_path / "scratch"
    scratch.mkdir()
    before = cli("hardware", "--models-dir", str(tmp_path), home=home)
    assert before.returncode == 0, before.stderr
    assert "'moedesk-cli probe-cpu' times them" in before.stdout

    unknown = cli("probe-cpu", "--type", "Q9_K", home=home)
    assert unknown.returncode == 2 and "cannot time Q9_K" in unknown.stdout and "IQ1_M" in unknown.stdout

    done = cli("probe-cpu", "--dir", str(scratch), "--type", "Q6_K", home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "remembered for this machine" in done.stdout
    assert list(scratch.iterdir()) == []  # the probe's models are gone

    monkeypatch.setenv("MOEDESK_HOME", str(home))
    rate = ram_bandwidth().expert_read
    assert rate is not None and rate.cpu == cpu_key() and rate.quant == "Q4_0"
    assert rate.threads == default_threads()
    assert 1e8 < rate.bytes_per_s < 1e13  # between a slow laptop's core and past any RAM
    # timed on wider experts too: what an expert costs beside its bytes (0.15 ms on the dev
    # machine's two threads; 0 where the wide ones streamed no faster)
    probe_expert_bytes = 3 * 2048 * 768 * 18 / 32  # Q4_0
    assert rate.expert_weights == 3 * 2048 * 768
    assert 0 <= rate.expert_seconds < probe_expert_bytes / rate.bytes_per_s
    # Q6_K against Q4_0, timed the same way (1.30-1.62x on the dev machine)
    assert list(rate.type_speeds) == ["Q6_K"] and 0.5 < rate.type_speeds["Q6_K"] < 3
    after = cli("hardware", "--models-dir", str(tmp_path), home=home)
    assert rate.describe() in after.stdout and "Q6_K" in rate.describe()


def test_a_rate_from_another_machine_or_version_is_not_used(tmp_path: Path) -> None:
    cache = tmp_path / CACHE_FILE
    rate = ExpertReadRate(bytes_per_s=60e9, threads=16, quant="Q4_0", cpu=cpu_key())
    assert cached_expert_read(cache) is None
    record_expert_read(rate, cache)
    assert cached_expert_read(cache) == rate
    for stale in (dataclasses.replace(rate, cpu="another|x86_64|64"), dataclasses.replace(rate, version=0)):
        record_expert_read(stale, cache)
        assert cached_expert_read(cache) is None
    data = json.loads(cache.read_text())
    for damaged in ({"bytes_per_s": "fast", "cpu": cpu_key(), "version": rate.version},
                    {**dataclasses.asdict(rate), "bytes_per_s": "fast"},
                    {**dataclasses.asdict(rate), "threads": 0},
                    {**dataclasses.asdict(rate), "type_speeds": {"Q6_K": -1}},
                    {**dataclasses.asdict(rate), "type_speeds": [1.4]},
                    {**dataclasses.asdict(rate), "expert_seconds": -1e-6},
                    {**dataclasses.asdict(rate), "expert_weights": "wide"}):
        data[CACHE_KEY] = damaged
        cache.write_text(json.dumps(data))
        assert cached_expert_read(cache) is None
    with pytest.raises(ValueError, match="positive"):
        record_expert_read(dataclasses.replace(rate, bytes_per_s=0.0), cache)
    # an entry from before the types were timed reads as one with none
    data[CACHE_KEY] = {k: v for k, v in dataclasses.asdict(rate).items() if k != "type_speeds"}
    cache.write_text(json.dumps(data))
    assert cached_expert_read(cache) == rate
    typed = dataclasses.replace(rate, type_speeds={"Q6_K": 1.4, "IQ1_M": 0.5})
    record_expert_read(typed, cache)
    assert cached_expert_read(cache) == typed


@pytest.mark.gpu
def test_beside_a_gpu_the_probe_times_experts_in_the_file_s_layout_and_the_advisor_uses_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.advisor.speed import predict
    from app.engine.client import EngineClient
    from app.engine.placement import PlacementPlan
    from app.hardware.bandwidth import measure_ram
    from app.tune.expert_read_probe import ensure_expert_read
    from tests.test_advisor import QWEN3_30B_Q4
    from tests.test_advisor_gpus import H100

    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    with EngineClient.spawn() as client:
        # the first tuning on this machine measures it (as `tune` and the Advisor page's
        # autotune do), the next finds it remembered
        rate = ensure_expert_read(client, folder=tmp_path)
        assert rate is not None and cached_expert_read() == rate
        assert ensure_expert_read(client, progress=pytest.fail) == rate
        # tuning a model of other expert types times those too, once
        typed = ensure_expert_read(client, types=["Q4_K"], folder=tmp_path)
        assert typed is not None and typed.bytes_per_s == rate.bytes_per_s
        assert 0.5 < typed.type_speeds["Q4_K"] < 3 and cached_expert_read() == typed
        assert ensure_expert_read(client, types=["Q4_K"], progress=pytest.fail) == typed
    assert 1e9 < rate.bytes_per_s < 1e13 and rate.threads == default_threads()
    ram = measure_ram(buffer_bytes=64 << 20)
    plan = PlacementPlan(n_ctx=4096, n_threads=rate.threads, experts_in_ram="all")
    with_rate, alone = (predict(QWEN3_30B_Q4, plan, {"CUDA0": H100}, r, rate.threads).decode
                        for r in (dataclasses.replace(ram, expert_read=rate), ram))
    assert with_rate.mid != pytest.approx(alone.mid, rel=1e-6)


def test_tuning_times_the_kernels_only_beside_a_gpu_and_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.engine.client import EngineClient
    from app.tune.expert_read_probe import ensure_expert_read

    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    with EngineClient.spawn() as client:
        if any(d.kind == "gpu" for d in client.info().devices):
            pytest.skip("a GPU here: the probe would run (tests/test_expert_read_probe.py's GPU test)")
        # no GPU: the speed model would not read it (repacked weights), so nothing is measured
        assert ensure_expert_read(client, progress=pytest.fail) is None
        assert cached_expert_read() is None
        # remembered for these threads: returned as it is, nothing measured
        known = ExpertReadRate(bytes_per_s=9e9, threads=3, quant="Q4_0", cpu=cpu_key())
        record_expert_read(known)
        assert ensure_expert_read(client, 3, progress=pytest.fail) == known
        assert ensure_expert_read(client, 3, types=["Q6_K"], progress=pytest.fail) == known
        assert ensure_expert_read(client, 4, progress=pytest.fail) is None  # other threads, no GPU



def test_tuning_times_a_model_s_own_expert_types() -> None:
    from app.synthetic import SyntheticSpec
    from app.tune.expert_read_probe import PROBE_TYPES, expert_types
    from tests.test_advisor import model_from_spec

    def types(preset: str, **fields: str) -> list[str]:
        return expert_types(model_from_spec(SyntheticSpec.preset(preset, **fields)))

    assert types("qwen3-30b-a3b") == []  # Q4_0: the probe's own
    assert types("qwen3-30b-a3b", expert_quant="IQ1_M") == ["IQ1_M"]
    assert types("gpt-oss-20b") == ["MXFP4"]
    assert "Q4_0" not in PROBE_TYPES and "F16" not in PROBE_TYPES and "Q6_K" in PROBE_TYPES


def test_the_wide_model_separates_an_expert_s_own_cost_from_its_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the probe's arithmetic on timings of a known machine: a token costs 2 ms, each layer 0.3
    # ms, each expert 40 us of its own plus its bytes at 90 GB/s, and a cost that grows with the
    # experts chosen and not with the layers (0.1 ms an expert: the dev machine's two-layer
    # slope held one). Headers stand in for the models (the timings are given, not measured).
    from app.gguf.info import read_model
    from app.synthetic.writer import write_synthetic_header
    from app.tune import expert_read_probe as probe
    from app.tune.measure import Measurement

    per_expert, per_byte = 40e-6, 1 / 90e9

    def write_header(path: Path, spec: object) -> list[Path]:
        return [write_synthetic_header(path, spec)]

    class FakeMeasurer:
        def __init__(self, _client: object, model: Path, cancel: object = None) -> None:
            self.info = read_model(model)

        def measure(self, label: str, plan: object, _workload: object) -> Measurement:
            k = plan.n_expert_used
            layers = len(self.info.moe_layers)
            seconds = (2e-3 + 0.3e-3 * layers + 0.1e-3 * k
                       + layers * k * (per_expert + per_byte * self.info.expert_bytes()))
            return Measurement(label, plan, decode_tps=1 / seconds)

    class FakeClient:
        def unload(self) -> None:
            pass

    monkeypatch.setattr(probe, "write_synthetic_model", write_header)
    monkeypatch.setattr(probe, "Measurer", FakeMeasurer)
    monkeypatch.setattr(probe, "settle_pending_writes", lambda *_args: True)
    rate = probe.measure_expert_read(FakeClient(), threads=16, folder=tmp_path, has_gpu=True, wide=True)
    q30_expert_bytes = 3 * 2048 * 768 * 18 / 32
    assert rate.expert_seconds == pytest.approx(per_expert, rel=1e-6)
    assert rate.bytes_per_s == pytest.approx(q30_expert_bytes / (per_expert + per_byte * q30_expert_bytes))
    q235_weights = 3 * 4096 * 1536
    q235_bytes = q235_weights * 18 / 32
    assert rate.rate_for(q235_weights) == pytest.approx(q235_bytes / (per_expert + per_byte * q235_bytes))
    # without the wide model the rate at the probe's size is the same, and nothing separated
    flat = probe.measure_expert_read(FakeClient(), threads=16, folder=tmp_path, has_gpu=True)
    assert flat.bytes_per_s == pytest.approx(rate.bytes_per_s) and flat.expert_seconds == 0
    # wide experts that streamed no faster a byte (a busy host): none separated
    per_expert = 0.0
    assert probe.measure_expert_read(FakeClient(), threads=16, folder=tmp_path, has_gpu=True,
                                     wide=True).expert_seconds == pytest.approx(0.0, abs=1e-12)
