"""The host-to-GPU copy probe (app/hardware/h2d.py): without a GPU it measures nothing; with a
CUDA runtime it times each kind of host memory through the runtime's own calls, reports a
failure instead of raising it, survives a runtime that crashes, and measures once per machine.

No GPU is needed: tests/fake_cudart.c is a stand-in libcudart whose "device" is host memory
and whose copies are memcpys, built here with the C compiler.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from app.hardware import h2d
from app.hardware.bandwidth import CACHE_FILE, ram_bandwidth
from app.hardware.cudart import load_cudart
from app.hardware.h2d import HostCopyRates, ProbeState, host_copy_probe, measure_host_copies, probe_in_process
from app.hardware.model import Gpu

MiB = 1 << 20
FAKE_GPU = Gpu("nvidia", "Fake CUDA GPU", 80 << 30, 79 << 30)


@pytest.fixture(scope="module")
def fake_cudart(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/fake_cudart.c built as a libcudart."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in CUDA runtime")
    library = tmp_path_factory.mktemp("fake_cudart") / "libcudart.so.12"
    source = Path(__file__).parent / "fake_cudart.c"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", str(source), "-o", str(library)], check=True)
    return str(library)


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in's log of calls (one name a line)."""
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_CUDART_LOG", str(log))
    return log


def test_without_an_nvidia_gpu_nothing_is_measured_and_the_ram_figures_carry_no_copy_rates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # this dev machine has no NVIDIA driver; a GPU machine is made to answer as one without
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    monkeypatch.setattr(h2d, "nvidia_gpus", lambda: ([], "NVML unavailable: no driver"))
    monkeypatch.setattr(h2d, "measure_host_copies", lambda *a, **k: pytest.fail("no probe without a GPU"))
    probe = host_copy_probe()
    assert (probe.state, probe.rates) == (ProbeState.NO_GPU, None)
    assert probe.describe() == "Host to GPU copies: not measured (no NVIDIA GPU: NVML unavailable: no driver)"
    assert ram_bandwidth(buffer_bytes=16 * MiB).host_copy is None
    assert "host_copy" not in json.loads((tmp_path / "cache" / CACHE_FILE).read_text())


def test_the_probe_times_pageable_mapped_and_pinned_copies_through_the_runtime_s_calls(
        fake_cudart: str, calls: Path, tmp_path: Path) -> None:
    answer = probe_in_process(fake_cudart, 8 * MiB, 2, tmp_path / "scratch")
    assert answer["state"] == "measured"
    rates = HostCopyRates(**answer["rates"])
    assert rates.gpu == "Fake CUDA GPU" and rates.copy_bytes == 8 * MiB
    assert rates.pageable > 1e8 and rates.pinned > 1e8 and rates.mapped and rates.mapped > 1e8
    assert rates.runtime == "12.8, libcudart.so.12"
    # each source: a warm-up and two timed copies, each waited for
    copies = ["cudaMemcpy(HostToDevice)", "cudaDeviceSynchronize"] * 3
    assert calls.read_text().split() == [
        "cudaGetDeviceCount", "cudaSetDevice", "cudaGetDeviceProperties_v2", "cudaMalloc",
        *copies,  # pageable
        *copies,  # the mapped file
        "cudaHostAlloc", *copies, "cudaFreeHost",
        "cudaFree", "cudaRuntimeGetVersion"]
    assert list((tmp_path / "scratch").iterdir()) == []  # the mapped file is gone


def test_a_failing_call_is_reported_with_its_cause_after_freeing_what_the_probe_took(
        fake_cudart: str, calls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CUDART_FAIL", "cudaHostAlloc")
    answer = probe_in_process(fake_cudart, 4 * MiB, 1, tmp_path)
    assert answer == {"state": "failed", "detail": "cudaHostAlloc failed: out of memory (CUDA error 2)"}
    assert calls.read_text().split()[-2:] == ["cudaHostAlloc", "cudaFree"]
    monkeypatch.setenv("FAKE_CUDART_DEVICES", "0")
    assert probe_in_process(fake_cudart, 4 * MiB, 1, tmp_path)["state"] == "no NVIDIA GPU"
    missing = probe_in_process(str(tmp_path / "libcudart.so.99"), 4 * MiB, 1, tmp_path)
    assert missing["state"] == "no CUDA runtime" and "libcudart.so.99" in missing["detail"]


def test_a_runtime_that_crashes_or_hangs_takes_down_the_probe_s_process_only(
        fake_cudart: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CUDART_CRASH", "cudaMalloc")  # abort(), as a broken driver may
    probe = measure_host_copies(fake_cudart, 4 * MiB, 1, tmp_path)
    assert (probe.state, probe.rates) == (ProbeState.FAILED, None)
    assert "exit code -6" in probe.detail  # SIGABRT
    monkeypatch.delenv("FAKE_CUDART_CRASH")
    monkeypatch.setenv("FAKE_CUDART_HANG", "cudaMemcpy(HostToDevice)")  # a wedged driver
    hung = measure_host_copies(fake_cudart, 4 * MiB, 1, tmp_path, timeout_s=2)
    assert (hung.state, hung.detail) == (ProbeState.FAILED, "the probe process gave no figures "
                                                             "(no answer within 2 s)")


def test_the_probe_measures_once_per_machine_and_set_of_gpus_then_reads_its_cache(
        fake_cudart: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    monkeypatch.setenv("MOEDESK_CUDART", fake_cudart)  # where the child finds its runtime
    smaller = functools.partial(measure_host_copies, copy_bytes=8 * MiB)
    monkeypatch.setattr(h2d, "measure_host_copies", smaller)
    monkeypatch.setattr(h2d, "nvidia_gpus", lambda: ([FAKE_GPU], None))
    first = host_copy_probe()  # measured in a child process
    assert first.state is ProbeState.MEASURED and first.rates is not None
    assert first.describe().startswith("Host to GPU copies (Fake CUDA GPU): ")
    cache = tmp_path / "cache" / CACHE_FILE
    data = json.loads(cache.read_text())
    assert data["host_copy"]["gpus"] == ["Fake CUDA GPU"]
    data["host_copy"]["rates"]["pinned"] = 123.0  # a figure no probe measures: proof it is read back
    cache.write_text(json.dumps(data))
    assert host_copy_probe().rates.pinned == 123.0
    assert ram_bandwidth(buffer_bytes=16 * MiB).host_copy.pinned == 123.0
    monkeypatch.setattr(h2d, "nvidia_gpus", lambda: ([FAKE_GPU, FAKE_GPU], None))  # a second GPU
    assert host_copy_probe().rates.pinned > 1e8
    monkeypatch.setenv("FAKE_CUDART_FAIL", "cudaMalloc")
    failed = host_copy_probe(refresh=True)
    assert failed.state is ProbeState.FAILED and "cudaMalloc failed" in failed.describe()
    assert json.loads(cache.read_text())["host_copy"]["rates"]["pinned"] > 1e8  # a failure is not cached


def test_a_real_cuda_runtime_has_the_calls_the_probe_binds() -> None:
    runtime = load_cudart()  # loading starts nothing: no driver, no context
    if runtime is None:
        pytest.skip("no CUDA runtime on this machine")
    assert runtime.lib.cudaMemcpy.argtypes is not None
