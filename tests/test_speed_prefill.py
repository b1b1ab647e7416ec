"""Prefill on a GPU against what the H200 measured for every family (issue 19).

tests/data/prefill_h200.csv: the twelfth session's 27 family runs (all on the GPU, every routed
expert in RAM, the first layers' experts in RAM) and Qwen3-30B's 48 layers on the GPU. The
speed model's GPU matmul terms were fitted on the all-GPU runs (each left out in turn gives the
same fit); the copy rate from pageable memory on the experts-in-RAM ones. The middle of each
predicted range must be within 25% of the measurement (all on the GPU: 10%, they are within 9%).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

from app.advisor.speed import predict
from app.engine.placement import PlacementPlan
from app.gguf.info import GGUFModel, read_model
from app.hardware.bandwidth import RamBandwidth
from app.hardware.model import Gpu
from app.synthetic import SyntheticSpec
from app.synthetic.writer import write_synthetic_header

DATA = Path(__file__).parent / "data" / "prefill_h200.csv"
H200 = Gpu("nvidia", "NVIDIA H200", 143 << 30, 143 << 30, pci_device_id="0x2335", compute_capability=(9, 0),
           pcie_gen=5, pcie_width=16, pcie_gen_max=5, pcie_width_max=16, memory_bandwidth=4.8e12)
# Runs whose copies from pageable memory ran at 0.78-0.84x or 1.5x the probe's one-thread copy
# rate, where the others ran at 0.85-1.35x (the same 9.5 GB Kimi-K2 layer copied at 14.0 GB/s
# alone and at 9.5 GB/s beside a second one): outside 25% of the fit's 1.07x
COPY_RATE_OUTLIERS = {("12a", "kimi-k2", "first-2"), ("12b", "kimi-k2", "first-2"),
                      ("12b", "glm-4.5", "experts-ram"), ("12b", "gpt-oss-120b", "experts-ram")}


def runs() -> list[dict[str, str]]:
    with DATA.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def run_id(run: dict[str, str]) -> str:
    return f"{run['session']}-{run['preset']}-{run['layers']}-{run['placement']}"


def params(run: dict[str, str]) -> object:
    marks = []
    if (run["session"], run["preset"], run["placement"]) in COPY_RATE_OUTLIERS:
        marks.append(pytest.mark.xfail(strict=True, reason="the copy rate from pageable memory varied 2x"))
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


def placement(name: str) -> PlacementPlan:
    base = PlacementPlan(n_threads=16, n_ctx=4096, n_ubatch=512, flash_attn="on", use_mmap=True)
    if name == "gpu":
        return dataclasses.replace(base, experts_in_ram="none")
    if name == "experts-ram":
        return dataclasses.replace(base, experts_in_ram="all")
    return dataclasses.replace(base, experts_in_ram=int(name.removeprefix("first-")))


@pytest.mark.parametrize("run", [params(r) for r in runs()])
def test_prefill_is_within_25_percent_of_the_h200_for_every_family(header, run: dict[str, str]) -> None:
    ram = RamBandwidth(read_bw=float(run["read_bw"]) * 1e9, read_bw_1=float(run["read_bw_1"]) * 1e9,
                       copy_bw_1=float(run["copy_bw_1"]) * 1e9, matmul_flops=float(run["matmul"]) * 1e9,
                       threads=16, buffer_bytes=0)
    model = header(run["preset"], int(run["layers"]))
    n_prompt, measured = int(run["n_prompt"]), float(run["prefill_tps"])
    prefill = predict(model, placement(run["placement"]), {"CUDA0": H200}, ram, 16, n_prompt, 64).prefill
    tolerance = 0.10 if run["placement"] == "gpu" else 0.25
    assert prefill.mid == pytest.approx(measured, rel=tolerance)
    if run["placement"] == "gpu":
        assert prefill.low <= measured <= prefill.high


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
