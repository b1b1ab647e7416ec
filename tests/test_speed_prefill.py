"""Prefill and decode on a GPU against what the H200 and the H100 measured for every family
(issue 19).

tests/data/prefill_h200.csv: the twelfth session's 27 family runs (all on the GPU, every routed
expert in RAM, the first layers' experts in RAM) and Qwen3-30B's 48 layers on the GPU. The
speed model's GPU matmul terms were fitted on the all-GPU runs (each left out in turn gives the
same fit); the copy rate from pageable memory on the experts-in-RAM ones.
tests/data/prefill_h100.csv: the fits out of sample, on an H100 host at other layer counts (and
gpt-oss without mmap). The middle of each predicted range must be within 25% of the measurement
(prefill all on the GPU: inside the range, and on the H200, where it was fitted, within 10%).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

from app.advisor.speed import Prediction, predict
from app.engine.placement import PlacementPlan
from app.gguf.info import GGUFModel, read_model
from app.hardware.bandwidth import RamBandwidth
from app.hardware.model import Gpu
from app.synthetic import SyntheticSpec
from app.synthetic.writer import write_synthetic_header
from tests.test_advisor_gpus import H100

DATA = Path(__file__).parent / "data"
H200 = Gpu("nvidia", "NVIDIA H200", 143 << 30, 143 << 30, pci_device_id="0x2335", compute_capability=(9, 0),
           pcie_gen=5, pcie_width=16, pcie_gen_max=5, pcie_width_max=16, memory_bandwidth=4.8e12)
MACHINES = {"h200": H200, "h100": H100}
# Copies from pageable memory (the CUDA driver's staging memcpy) against the probe's one-thread
# copy rate: 0.85-1.35x on most H200 runs, 0.78-0.84x or 1.5x on these (the same 9.5 GB Kimi-K2
# layer copied at 14.0 GB/s alone and at 9.5 GB/s beside a second one); 0.73-0.79x on three of
# the H100 host's five, whose probe copied faster than the H200 hosts' (9.8 GB/s against 9.0-9.3)
# while its driver copied slower: outside 25% of the fit's 1.07x. The probe's numpy copy is not
# the driver's; a measured host-to-GPU rate would be.
COPY_RATE_OUTLIERS = {("12a", "kimi-k2", "first-2"), ("12b", "kimi-k2", "first-2"),
                      ("12b", "glm-4.5", "experts-ram"), ("12b", "gpt-oss-120b", "experts-ram"),
                      ("14", "glm-4.5", "experts-ram"), ("14", "qwen3-235b-a22b", "experts-ram"),
                      ("14", "qwen3-235b-a22b", "first-6")}
# The one run from pinned memory decoded 17% slower than the same placement from the mapped
# file (33.3 against 40.3 t/s, one pair on one host): the model reads both alike.
DECODE_OUTLIERS = {("14", "gpt-oss-120b", "experts-ram", "0")}


def runs() -> list[dict[str, str]]:
    rows = []
    for machine in MACHINES:
        with (DATA / f"prefill_{machine}.csv").open() as f:
            lines = (line for line in f if not line.startswith("#"))
            rows += [dict(r, machine=machine) for r in csv.DictReader(lines)]
    return rows


def run_id(run: dict[str, str]) -> str:
    pinned = "-no-mmap" if run.get("use_mmap") == "0" else ""
    return f"{run['machine']}-{run['session']}-{run['preset']}-{run['layers']}-{run['placement']}{pinned}"


def prefill_params(run: dict[str, str]) -> object:
    marks = []
    pageable = run.get("use_mmap", "1") == "1"
    if (run["session"], run["preset"], run["placement"]) in COPY_RATE_OUTLIERS and pageable:
        marks.append(pytest.mark.xfail(strict=True, reason="the copy rate from pageable memory varied 2x"))
    return pytest.param(run, id=run_id(run), marks=marks)


def decode_params(run: dict[str, str]) -> object:
    marks = []
    if (run["session"], run["preset"], run["placement"], run.get("use_mmap", "1")) in DECODE_OUTLIERS:
        marks.append(pytest.mark.xfail(strict=True, reason="pinned memory decoded slower"))
    return pytest.param(run, id=run_id(run), marks=marks)


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 (a loader of GGUFModels)
    folder = tmp_path_factory.mktemp("prefill")
    cache: dict[tuple[str, int], GGUFModel] = {}

    def load(preset: str, n_layer: int) -> GGUFModel:
        if (preset, n_layer) not in cache:
            path = write_synthetic_header(folder / f"{preset}-{n_layer}.gguf",
                                          SyntheticSpec.preset(preset, n_layer=n_layer))
            cache[(preset, n_layer)] = read_model(path)
        return cache[(preset, n_layer)]
    return load


def placement(name: str, use_mmap: bool = True) -> PlacementPlan:
    base = PlacementPlan(n_threads=16, n_ctx=4096, n_ubatch=512, flash_attn="on", use_mmap=use_mmap)
    if name == "gpu":
        return dataclasses.replace(base, experts_in_ram="none")
    if name == "experts-ram":
        return dataclasses.replace(base, experts_in_ram="all")
    return dataclasses.replace(base, experts_in_ram=int(name.removeprefix("first-")))


def predicted(header, run: dict[str, str]) -> Prediction:  # noqa: ANN001 (the fixture's loader)
    """The model's prediction for a measured run, from that machine's GPU and RAM probe."""
    ram = RamBandwidth(read_bw=float(run["read_bw"]) * 1e9, read_bw_1=float(run["read_bw_1"]) * 1e9,
                       copy_bw_1=float(run["copy_bw_1"]) * 1e9, matmul_flops=float(run["matmul"]) * 1e9,
                       threads=16, buffer_bytes=0)
    model = header(run["preset"], int(run["layers"]))
    plan = placement(run["placement"], use_mmap=run.get("use_mmap", "1") == "1")
    n_gen = 64 if run["machine"] == "h200" else 32
    return predict(model, plan, {"CUDA0": MACHINES[run["machine"]]}, ram, 16, int(run["n_prompt"]), n_gen)


@pytest.mark.parametrize("run", [prefill_params(r) for r in runs()])
def test_prefill_is_within_25_percent_of_the_h200_and_the_h100_for_every_family(
        header, run: dict[str, str]) -> None:
    prefill, measured = predicted(header, run).prefill, float(run["prefill_tps"])
    tolerance = 0.10 if run["placement"] == "gpu" and run["machine"] == "h200" else 0.25
    assert prefill.mid == pytest.approx(measured, rel=tolerance)
    if run["placement"] == "gpu":
        assert prefill.low <= measured <= prefill.high


@pytest.mark.parametrize("run", [decode_params(r) for r in runs() if r["decode_tps"]])
def test_decode_is_within_25_percent_of_the_h200_and_the_h100_for_every_family(
        header, run: dict[str, str]) -> None:
    # with experts in RAM the CPU's part is set by the host's cores: the H100 host's read 7.7 GB/s
    # a core against the H200 hosts' 8.6-8.7, at nearly the same all-core rate (76.6 against 75)
    decode, measured = predicted(header, run).decode, float(run["decode_tps"])
    assert decode.mid == pytest.approx(measured, rel=0.25)


def test_the_last_layer_s_experts_in_ram_are_never_copied(header) -> None:
    # llama.cpp runs the last layer's FFN for the ubatch's output token only: too few tokens
    # for op offload, so a model whose one MoE layer is the last prefills with its experts in
    # RAM nearly as fast as with them on the GPU (DeepSeek-V3: 3 dense layers and one MoE)
    ram = RamBandwidth(read_bw=75e9, read_bw_1=8.7e9, copy_bw_1=9.3e9, matmul_flops=800e9, threads=16,
                       buffer_bytes=0)
    model = header("deepseek-v3", 4)
    gpu, in_ram = (predict(model, placement(p), {"CUDA0": H200}, ram, 16, 480, 64).prefill
                   for p in ("gpu", "experts-ram"))
    assert in_ram.mid > 0.8 * gpu.mid
    five = header("deepseek-v3", 5)  # one more MoE layer, not the last: its 6.3 GB copied
    copied = predict(five, placement("experts-ram"), {"CUDA0": H200}, ram, 16, 480, 64).prefill
    assert copied.mid < 0.1 * gpu.mid
