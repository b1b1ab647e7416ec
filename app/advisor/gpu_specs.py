"""What a GPU can do for the speed model: memory bandwidth, matmul FLOP/s, host link.

Memory bandwidth, best source first: a measured figure recorded in the bandwidth cache
(``app.hardware.bandwidth.record_gpu_bandwidth``), NVML's memory clock x bus width, this
table, a guess. Compute: the table's dense fp16 tensor-core peak (fp32 accumulate), which
llama.cpp's quantized matmul kernels reach a fraction of (see app/advisor/device_rates.py and
prefill.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.hardware.bandwidth import measured_gpu_bandwidth
from app.hardware.model import Gpu

# name fragment (lower case, most specific first) or PCI device id -> (GB/s, fp16 TFLOP/s)
GPU_TABLE: tuple[tuple[str, float, float], ...] = (
    ("h200", 4800, 989), ("gh200", 4000, 989), ("h100 nvl", 3900, 835),
    ("h100 pcie", 2000, 756), ("h100", 3350, 989), ("b200", 8000, 2250),
    ("a100-sxm4-80gb", 2039, 312), ("a100 80gb pcie", 1935, 312), ("a100", 1555, 312),
    ("l40s", 864, 362), ("l40", 864, 181), ("l4", 300, 121), ("a10", 600, 125),
    ("rtx pro 6000", 1792, 500), ("rtx 6000 ada", 960, 364), ("rtx a6000", 768, 155),
    ("rtx 5090", 1792, 209), ("rtx 5080", 960, 113), ("rtx 4090", 1008, 165),
    ("rtx 4080", 717, 97), ("rtx 4070 ti", 504, 80), ("rtx 4070", 504, 58),
    ("rtx 4060 ti", 288, 44), ("rtx 3090 ti", 1008, 80), ("rtx 3090", 936, 71),
    ("rtx 3080", 760, 59), ("rtx 3070", 448, 40), ("rtx 3060", 360, 25),
    ("v100", 900, 125), ("t4", 320, 65),
    ("mi300x", 5300, 1307), ("mi250x", 3277, 383), ("7900 xtx", 960, 123),
    ("0x744c", 960, 123),  # Navi 31 (RX 7900 XTX/XT), as amdgpu names it without a product name
    ("7900 xt", 800, 103), ("6900 xt", 512, 46),
)  # fmt: skip
# An unknown discrete GPU: a mid-range card of recent years.
GUESS = (400.0, 40.0)
# PCIe usable bytes/s per lane by generation (after line coding)
PCIE_LANE = {1: 0.25e9, 2: 0.5e9, 3: 0.985e9, 4: 1.969e9, 5: 3.938e9, 6: 7.563e9}


@dataclass
class GpuSpec:
    bandwidth: float  # bytes/s, peak
    flops: float  # FLOP/s, dense fp16 tensor peak
    pcie: float  # bytes/s, host link peak (one direction)
    source: str  # where the bandwidth came from, for the plan's notes


def gpu_spec(gpu: Gpu | None, name: str = "") -> GpuSpec:
    """The figures the speed model uses for ``gpu`` (None: a GPU known only by its name)."""
    label = (gpu.name if gpu else name) or name
    keys = (label.lower(), (gpu.pci_device_id or "") if gpu else "")
    row = next((r for r in GPU_TABLE for key in keys if key and r[0] in key), None)
    table_bw, table_tflops = (row[1], row[2]) if row else GUESS
    measured = measured_gpu_bandwidth(label) if label else None
    if measured:
        bandwidth, source = measured, "measured"
    elif gpu and gpu.memory_bandwidth:
        bandwidth, source = gpu.memory_bandwidth, "NVML memory clock x bus width"
    elif row:
        bandwidth, source = table_bw * 1e9, "table"
    else:
        bandwidth, source = table_bw * 1e9, "guessed (unknown GPU)"
    return GpuSpec(bandwidth=bandwidth, flops=table_tflops * 1e12, pcie=pcie_bandwidth(gpu),
                   source=source)


def pcie_bandwidth(gpu: Gpu | None) -> float:
    """Peak host-to-GPU bytes/s. The max link, not the current one: an idle GPU trains its
    link down (PCIe 1 x16 at rest is common) and back up under load. Unknown: PCIe 4 x16."""
    gen = (gpu.pcie_gen_max or gpu.pcie_gen) if gpu else None
    width = (gpu.pcie_width_max or gpu.pcie_width) if gpu else None
    return PCIE_LANE.get(gen or 4, PCIE_LANE[4]) * (width or 16)
