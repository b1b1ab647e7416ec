"""Prefill and decode on a GPU against what the H200 and the H100 measured for every family
(issue 19).

tests/data/prefill_h200.csv: the twelfth session's 27 family runs (all on the GPU, every routed
expert in RAM, the first layers' experts in RAM) and Qwen3-30B's 48 layers on the GPU. The
speed model's GPU matmul terms were fitted on the all-GPU runs (each left out in turn gives the
same fit); the copy rate from pageable memory on the experts-in-RAM ones.
tests/data/prefill_h100.csv: the fits out of sample, on an H100 host at other layer counts (and
gpt-oss without mmap). The middle of each predicted range must be within 25% of the measurement
(prefill all on the GPU: inside the range, and on the H200, where it was fitted, within 10%).

Rows may carry the host-to-GPU copy probe's figures (app/hardware/h2d.py, in GB/s:
``h2d_pageable``, ``h2d_mapped``, ``h2d_pinned``); the prediction then copies at those instead
of estimating (bench/jobs/h2d-probe-h200.sh measures them, bench/copy_rate_fit.py refits).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest

from app.advisor.device_rates import MAPPED_COPY_EFFICIENCY, PINNED_COPY_EFFICIENCY
from app.advisor.speed import Prediction, predict
from app.engine.placement import PlacementPlan
from app.gguf.info import GGUFModel, read_model
from app.hardware.bandwidth import RamBandwidth
from app.hardware.expert_read import ExpertReadRate
from app.hardware.h2d import HostCopyRates
from app.hardware.model import Gpu
from app.synthetic import SyntheticSpec
from app.synthetic.writer import write_synthetic_header
from app.tune.expert_read_probe import probe_spec
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
# the driver's; the copy probe's figures (app/hardware/h2d.py) are in the sixteenth session's rows only.
COPY_RATE_OUTLIERS = {("12a", "kimi-k2", "first-2"), ("12b", "kimi-k2", "first-2"),
                      ("12b", "glm-4.5", "experts-ram"), ("12b", "gpt-oss-120b", "experts-ram"),
                      ("14", "glm-4.5", "experts-ram"), ("14", "qwen3-235b-a22b", "experts-ram"),
                      ("14", "qwen3-235b-a22b", "first-6")}
# Decode runs outside 25%, each with why. The one run from pinned memory decoded 17% slower
# than the same placement from the mapped file (33.3 against 40.3 t/s, one pair on one host):
# the model reads both alike.
DECODE_OUTLIERS = {("14", "gpt-oss-120b", "experts-ram", "0"): "pinned memory decoded slower"}
# The sixteenth session's H100 host: its RAM probe read 1.30x (all cores) and 1.50x (one thread)
# what the fourteenth's H100 host read, while its CPU decoded at about the same rate, so the
# model's two CPU bounds put the Qwen3-30B rows 29-35% high (the thread share these runs imply:
# 0.24-0.27, against 0.29-0.36 on the other H100 host and 0.34-0.45 on the H200 hosts). A
# probe that times llama.cpp's own CPU kernels would follow the decode; the numpy probes do not.
DECODE_OUTLIERS |= dict.fromkeys([("16", "qwen3-30b-a3b", "first-42", "1"),
                                   ("16", "qwen3-30b-a3b", "first-36", "0"),
                                   ("16", "qwen3-30b-a3b", "first-36", "1")],
                                  "the RAM probe read this host fast")


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
    reason = DECODE_OUTLIERS.get((run["session"], run["preset"], run["placement"], run.get("use_mmap", "1")))
    if reason:
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(run, id=run_id(run), marks=marks)


class Headers:
    """The runs' models: synthetic headers (no weights) written once each into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cache: dict[tuple[str, int], GGUFModel] = {}

    def __call__(self, preset: str, n_layer: int) -> GGUFModel:
        if (preset, n_layer) not in self.cache:
            path = write_synthetic_header(self.folder / f"{preset}-{n_layer}.gguf",
                                          SyntheticSpec.preset(preset, n_layer=n_layer))
            self.cache[(preset, n_layer)] = read_model(path)
        return self.cache[(preset, n_layer)]


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory) -> Headers:
    return Headers(tmp_path_factory.mktemp("prefill"))


def placement(name: str, use_mmap: bool = True) -> PlacementPlan:
    base = PlacementPlan(n_threads=16, n_ctx=4096, n_ubatch=512, flash_attn="on", use_mmap=use_mmap)
    if name == "gpu":
        return dataclasses.replace(base, experts_in_ram="none")
    if name == "experts-ram":
        return dataclasses.replace(base, experts_in_ram="all")
    return dataclasses.replace(base, experts_in_ram=int(name.removeprefix("first-")))


# GB/s and GFLOP/s columns: the RAM probe's, then the host-to-GPU copy probe's and the kernel
# probe's (Q4_0 experts, 16 threads; app/tune/expert_read_probe.py), both optional
PROBE_COLUMNS = ("read_bw", "read_bw_1", "copy_bw_1", "matmul", "h2d_pageable", "h2d_mapped", "h2d_pinned",
                 "kernel_read")


def probes(run: dict[str, str]) -> RamBandwidth:
    """The run's machine as its RAM probe (and copy and kernel probes, where the row has them)
    measured it."""
    gb = {key: float(value) * 1e9 for key, value in run.items() if key in PROBE_COLUMNS and value}
    host_copy = None
    if "h2d_pinned" in gb or "h2d_mapped" in gb:  # some rows carry only the mapped file's figure,
        # all their runs copy at (a pinned run of such a row would predict NaN and fail)
        host_copy = HostCopyRates(gpu=MACHINES[run["machine"]].name,
                                  pageable=gb.get("h2d_pageable", gb.get("h2d_mapped", math.nan)),
                                  pinned=gb.get("h2d_pinned", math.nan), mapped=gb.get("h2d_mapped"),
                                  copy_bytes=256 << 20)
    kernels = None
    if "kernel_read" in gb:  # with an expert's own cost where the row has one (us)
        probe = probe_spec()
        kernels = ExpertReadRate(gb["kernel_read"], threads=16, quant="Q4_0",
                                 expert_weights=3 * probe.n_embd * probe.n_ff_exp,
                                 expert_seconds=float(run.get("expert_us") or 0) * 1e-6)
    return RamBandwidth(read_bw=gb["read_bw"], read_bw_1=gb["read_bw_1"], copy_bw_1=gb["copy_bw_1"],
                        matmul_flops=gb["matmul"], threads=16, buffer_bytes=0, host_copy=host_copy,
                        expert_read=kernels)


def predicted(header: Headers, run: dict[str, str], ram: RamBandwidth | None = None) -> Prediction:
    """The model's prediction for a measured run, from that machine's GPU and probes (``ram``
    instead of the row's, where given)."""
    model = header(run["preset"], int(run["layers"]))
    plan = placement(run["placement"], use_mmap=run.get("use_mmap", "1") == "1")
    n_gen = 64 if run["machine"] == "h200" else 32
    share = float(run.get("prompt_experts") or 0) or None  # counted by the run's routing telemetry
    return predict(model, plan, {"CUDA0": MACHINES[run["machine"]]}, ram or probes(run), 16,
                   int(run["n_prompt"]), n_gen, prompt_experts=share)


@pytest.mark.parametrize("run", [prefill_params(r) for r in runs() if r["prefill_tps"]])
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


H100_RAM = RamBandwidth(read_bw=76.6e9, read_bw_1=7.7e9, copy_bw_1=9.8e9, matmul_flops=920e9, threads=16,
                        buffer_bytes=0)
MEASURED = HostCopyRates(gpu=H100.name, pageable=9.5e9, pinned=52e9, mapped=7.5e9, copy_bytes=256 << 20)


def prefill_seconds(header: Headers, host_copy: HostCopyRates | None, use_mmap: bool = True,
                    ram: RamBandwidth = H100_RAM) -> tuple[Prediction, float, float]:
    """Qwen3-235B's 12 layers with every routed expert in RAM on the H100: the prediction and
    its prefill seconds at the range's two ends."""
    p = predict(header("qwen3-235b-a22b", 12), placement("experts-ram", use_mmap), {"CUDA0": H100},
                dataclasses.replace(ram, host_copy=host_copy), 16, 484, 32)
    return p, 484 / p.prefill.low, 484 / p.prefill.high


@pytest.mark.parametrize("use_mmap, figure, efficiency", [(True, "mapped", MAPPED_COPY_EFFICIENCY),
                                                          (False, "pinned", PINNED_COPY_EFFICIENCY)])
def test_a_measured_copy_rate_half_as_fast_adds_the_copies_time_once_more(
        header: Headers, use_mmap: bool, figure: str, efficiency: tuple[float, float]) -> None:
    fast, fast_low, fast_high = prefill_seconds(header, MEASURED, use_mmap)
    half = dataclasses.replace(MEASURED, **{figure: getattr(MEASURED, figure) / 2})
    slow, slow_low, slow_high = prefill_seconds(header, half, use_mmap)
    copied = fast.prefill_copy_bytes
    assert copied > 10e9  # all 12 layers' experts, each ubatch: every expert is some token's
    rate = getattr(MEASURED, figure)
    assert slow_low - fast_low == pytest.approx(copied / (rate * efficiency[0]), rel=1e-6)
    assert slow_high - fast_high == pytest.approx(copied / (rate * efficiency[1]), rel=1e-6)
    source = "the mapped file" if use_mmap else "pinned memory"
    assert any(f"copies from {source} measured at {rate / 1e9:.1f} GB/s" in n for n in fast.notes)
    # the other kind of memory's figure plays no part
    other = "pinned" if use_mmap else "mapped"
    unrelated = dataclasses.replace(MEASURED, **{other: getattr(MEASURED, other) / 2})
    assert prefill_seconds(header, unrelated, use_mmap)[0].prefill == fast.prefill


def test_measured_copies_replace_the_estimate_from_the_ram_probe(header: Headers) -> None:
    estimated, *_ = prefill_seconds(header, None)
    assert any("copies from the mapped file estimated from the RAM probe's copy rate" in n
               for n in estimated.notes)
    # measured: the numpy copy (the estimate's basis) no longer counts
    slower_numpy = dataclasses.replace(H100_RAM, copy_bw_1=H100_RAM.copy_bw_1 / 2)
    measured = prefill_seconds(header, MEASURED)[0].prefill
    assert prefill_seconds(header, MEASURED, ram=slower_numpy)[0].prefill == measured
    assert prefill_seconds(header, None, ram=slower_numpy)[0].prefill.mid < 0.7 * estimated.prefill.mid
    # no mapped-file figure: the pageable one stands in for it
    unmapped = dataclasses.replace(MEASURED, mapped=None, pageable=MEASURED.mapped)
    assert prefill_seconds(header, unmapped)[0].prefill == measured
    # a probe of another GPU (CUDA device 0 is not this one) is not used
    elsewhere = dataclasses.replace(MEASURED, gpu="NVIDIA H200")
    assert prefill_seconds(header, elsewhere)[0].prefill == estimated.prefill


def test_a_prompt_whose_tokens_chose_fewer_experts_copies_fewer(header) -> None:
    # op offload copies a ubatch's chosen experts of each RAM layer: independent tokens choose
    # nearly all in 484 tokens; a counted prompt (a benchmark's, bench/predict_vs_measure.py)
    # gives its own share
    model = header("qwen3-30b-a3b", 48)
    plan = placement("experts-ram", use_mmap=False)
    ram = dataclasses.replace(H100_RAM, host_copy=MEASURED)

    def prefill(share: float | None) -> Prediction:
        return predict(model, plan, {"CUDA0": H100}, ram, 16, 484, 32, prompt_experts=share)

    independent, counted = prefill(None), prefill(0.8)
    assert counted.prefill_copy_bytes == pytest.approx(0.8 * independent.prefill_copy_bytes, rel=0.01)
    assert counted.prefill.mid > independent.prefill.mid
    assert counted.decode == independent.decode  # a decoded token copies nothing
