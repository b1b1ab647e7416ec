"""Planning for several GPUs, for what the llama.cpp build can drive, and for NUMA machines."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.advisor.devices import usable_gpus
from app.advisor.memory import VRAM_HEADROOM, layer_devices, memory_by_device
from app.advisor.planner import experts_in_ram_placement, plan_for
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan, TensorOverride, expert_layer_pattern
from app.engine.protocol import BuildInfo, DeviceInfo
from app.hardware import detect
from app.hardware.model import Cpu, Gpu, Hardware, Memory
from app.synthetic import SyntheticSpec
from tests.test_advisor import QWEN3_30B_Q8, model_from_spec

GiB = 1024**3
RECORDED = Path(__file__).parent / "data" / "hardware"
# The accelerator machine's GPU as NVML reported it (app.hardware.gpus.nvidia_gpus there).
H100 = Gpu("nvidia", "NVIDIA H100 80GB HBM3", 85520809984, 84506181632, driver="nvidia",
           pci_device_id="0x2330", compute_capability=(9, 0), pcie_gen=5, pcie_width=16,
           pcie_gen_max=5, pcie_width_max=16, memory_bandwidth=2619e6 * 2 * 640)


def two_gpus(first_gib: float, second_gib: float) -> Hardware:
    gpus = [Gpu("nvidia", "RTX A", int(first_gib * GiB), int(first_gib * GiB)),
            Gpu("nvidia", "RTX B", int(second_gib * GiB), int(second_gib * GiB))]
    return Hardware(Cpu("CPU", "x86_64", 8, 16, ()), Memory(128 * GiB, 128 * GiB, 0), [], gpus)


def test_two_gpus_split_the_layers_by_usable_vram() -> None:
    # Budgets 24 GiB - 1 GiB = 24.70 GB and 12 GiB - 1 GiB = 11.81 GB: tensor_split 0.676 : 0.324.
    # llama.cpp's layer split over 48 layers + the output layer: layer i goes to CUDA0 while
    # i / 49 < 0.6765, so layers 0-33 on CUDA0, 34-47 and the output on CUDA1.
    # CUDA0 with all its experts: 34 x (0.642 experts + 0.0201 attention + 0.0011 router) GB
    #   + 34 x 0.0671 GB KV (32k) + 0.320 compute = 25.15 GB > 24.70: the experts of its first
    #   layer (0) go to RAM -> 24.51 GB.
    # CUDA1: 14 x 0.663 + 0.331 output + 14 x 0.0671 KV + 0.320 = 10.87 GB < 11.81: all stay.
    plan = plan_for(QWEN3_30B_Q8, two_gpus(24, 12), 32768)
    assert plan.verdict == "fits_with_expert_offload"
    assert plan.placement.tensor_split == [0.676, 0.324]
    assert plan.placement.split_mode == "layer"
    devices = layer_devices(plan.placement, 48, ["CUDA0", "CUDA1"])
    assert devices == ["CUDA0"] * 34 + ["CUDA1"] * 15
    assert plan.placement.experts_in_ram == 1 and plan.experts_in_ram_layers == 1
    assert plan.device("CUDA0").kv == 34 * 32768 * 4 * 256 * 2
    assert plan.device("CUDA1").kv == 14 * 32768 * 4 * 256 * 2
    assert plan.device("CUDA0").total <= 24 * GiB - VRAM_HEADROOM
    assert plan.device("CUDA1").total <= 12 * GiB - VRAM_HEADROOM


def test_two_small_gpus_each_send_the_first_layers_of_their_range_to_ram() -> None:
    # Budgets 15 GiB = 16.11 GB and 7 GiB = 7.52 GB: split 0.682 : 0.318, layers 0-33 on
    # CUDA0 (i / 49 < 0.682), 34-47 and the output on CUDA1. At 8,192 tokens:
    # CUDA0: 34 x (20.1 MB attention + 1.05 MB router + 16.8 MB KV) + 0.32 GB compute = 1.61 GB;
    #   (16.11 - 1.61) / 0.642 GB of experts per layer = 22.6: 22 layers keep their experts,
    #   the first 12 of its range (0-11) send them to RAM.
    # CUDA1: 14 x 37.9 MB + 0.331 output + 0.32 compute = 1.18 GB; (7.52 - 1.18) / 0.642 = 9.9:
    #   9 keep them, the first 5 of its range (34-38) go to RAM.
    plan = plan_for(QWEN3_30B_Q8, two_gpus(16, 8), 8192)
    assert plan.placement.tensor_split == [0.682, 0.318]
    devices = layer_devices(plan.placement, 48, ["CUDA0", "CUDA1"])
    assert devices.index("CUDA1") == 34
    # not a "first N layers" shortcut any more: one override rule names the layers
    assert plan.placement.experts_in_ram == "none"
    in_ram = [*range(0, 12), *range(34, 39)]
    assert plan.placement.overrides == [TensorOverride(expert_layer_pattern(in_ram), "CPU")]
    assert plan.experts_in_ram_layers == 17
    # each GPU is full: one layer fewer in RAM on either would not fit
    names = ["CUDA0", "CUDA1"]
    for removed, device, budget in ((11, "CUDA0", 16), (38, "CUDA1", 8)):
        assert plan.device(device).total <= budget * GiB - VRAM_HEADROOM
        base = PlacementPlan(n_ctx=8192, tensor_split=plan.placement.tensor_split)
        fewer = experts_in_ram_placement(base, set(in_ram) - {removed}, QWEN3_30B_Q8)
        total = next(m.total for m in memory_by_device(QWEN3_30B_Q8, fewer, names) if m.device == device)
        assert total > budget * GiB - VRAM_HEADROOM


@pytest.fixture(scope="module")
def cpu_build(engine: EngineClient) -> BuildInfo:
    """This machine's real llama.cpp build: CPU only."""
    build = engine.info()
    assert [d.kind for d in build.devices] == ["cpu"]
    return build


def test_an_nvidia_gpu_without_a_cuda_build_gives_a_cpu_plan_and_the_fix(cpu_build: BuildInfo) -> None:
    machine = dataclasses.replace(detect(RECORDED / "numa_server", nvml=False), gpus=[H100])
    plan = plan_for(QWEN3_30B_Q8, machine, 8192, build=cpu_build)
    assert plan.verdict == "fits_in_ram"
    assert plan.placement.n_gpu_layers == 0 and plan.gpus == []
    assert [m.device for m in plan.memory] == ["CPU"]
    reason = plan.reasons[0]
    assert reason.startswith("NVIDIA H100 80GB HBM3 is present, but this llama.cpp build has no CUDA "
                             "backend (it has: CPU)")
    assert reason.endswith('reinstall the engine with CMAKE_ARGS="-DGGML_CUDA=on" python3 '
                           "installers/install.py")
    # without the build's word the advisor would have planned for the H100
    assert plan_for(QWEN3_30B_Q8, machine, 8192).verdict == "fits_on_gpu"


def test_a_cuda_build_plans_with_the_free_memory_the_engine_reports() -> None:
    machine = dataclasses.replace(detect(RECORDED / "numa_server", nvml=False), gpus=[H100])
    build = BuildInfo("0.3.36", ["CPU", "CUDA"], [
        DeviceInfo("CPU", "Intel Xeon", "cpu", 0, 0),
        DeviceInfo("CUDA0", "NVIDIA H100 80GB HBM3", "gpu", 85520809984, 20 * GiB),  # 60 GB in use
    ], True, "")
    gpus, reasons = usable_gpus(machine, build)
    assert [(g.device, g.name, g.free, g.gpu) for g in gpus] == [
        ("CUDA0", "NVIDIA H100 80GB HBM3", 20 * GiB, H100)]
    assert reasons == []
    plan = plan_for(QWEN3_30B_Q8, machine, 8192, build=build)
    assert plan.verdict == "fits_with_expert_offload"
    assert plan.device("CUDA0").total <= 19 * GiB


def test_experts_that_fit_one_numa_node_run_on_that_node() -> None:
    server = detect(RECORDED / "numa_server", nvml=False)  # 2 nodes of 4 CPUs (2 cores each)
    plan = plan_for(QWEN3_30B_Q8, server, 8192)  # 33 GB in RAM, 512 GB free per node
    assert plan.placement.n_threads == 2
    assert "numactl --cpunodebind=0 --membind=0" in plan.advice[0]
    # nodes with 20 GB free each: the experts must spread over both
    small = dataclasses.replace(server, numa_nodes=[
        dataclasses.replace(n, mem_free=20 * GiB) for n in server.numa_nodes])
    plan = plan_for(QWEN3_30B_Q8, small, 8192)
    assert plan.placement.n_threads == 4
    assert "numactl --interleave=all" in plan.advice[-1]


def test_a_plan_keeps_the_threads_the_user_chose() -> None:
    server = detect(RECORDED / "numa_server", nvml=False)
    plan = plan_for(QWEN3_30B_Q8, server, 8192, PlacementPlan(n_threads=3))
    assert plan.placement.n_threads == 3


def test_qwen3_235b_on_one_24_gb_gpu() -> None:
    model = model_from_spec(SyntheticSpec.preset("qwen3-235b-a22b"))  # Q4_0, 94 layers
    machine = Hardware(Cpu("CPU", "x86_64", 16, 32, ()), Memory(192 * GiB, 180 * GiB, 0), [],
                       [Gpu("nvidia", "NVIDIA GeForce RTX 4090", 24 * GiB, 23 * GiB)])
    plan = plan_for(model, machine, 16384)
    assert plan.verdict == "fits_with_expert_offload"
    assert plan.placement.experts_in_ram == plan.experts_in_ram_layers
    assert 80 < plan.experts_in_ram_layers < 94
