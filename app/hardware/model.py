"""The plain data that hardware detection hands out, and its human summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.units import file_size, gib


@dataclass
class Cpu:
    model: str
    arch: str  # "x86_64", "arm64", or what platform.machine() says
    physical_cores: int
    logical_cores: int
    # Instruction sets llama.cpp has kernels for, in Linux's names (arm64's asimd as "neon",
    # asimddp as "dotprod", as llama.cpp's system info prints them).
    flags: tuple[str, ...]


@dataclass
class NumaNode:
    id: int
    cpus: tuple[int, ...]
    mem_total: int  # bytes
    mem_free: int  # bytes


@dataclass
class Memory:
    total: int  # bytes
    available: int  # bytes
    swap_total: int  # bytes


@dataclass
class Gpu:
    vendor: str  # "nvidia", "amd", "intel", "apple"
    name: str
    vram_total: int | None  # bytes; None where the driver does not say (Intel i915)
    vram_free: int | None
    driver: str | None = None
    pci_device_id: str | None = None  # "0x744c"
    compute_capability: tuple[int, int] | None = None  # NVIDIA only
    pcie_gen: int | None = None
    pcie_width: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_max: int | None = None
    unified_memory: bool = False  # Apple silicon: the "VRAM" is the machine's RAM
    memory_bandwidth: float | None = None  # bytes/s, NVML's max memory clock x bus width


@dataclass
class Hardware:
    cpu: Cpu
    memory: Memory | None
    numa_nodes: list[NumaNode]
    gpus: list[Gpu]
    models_dir: Path | None = None
    disk_free: int | None = None  # bytes free on the file system holding models_dir
    nvml_error: str | None = None  # why no NVIDIA GPUs were listed, when NVML could not be used
    notes: list[str] = field(default_factory=list)  # what could not be read, in plain words

    def summary(self) -> list[str]:
        """A few lines for a terminal or a status page."""
        cpu = self.cpu
        lines = [
            f"CPU: {cpu.model} ({cpu.arch}), {cpu.physical_cores} cores, {cpu.logical_cores} threads",
            f"  instruction sets: {' '.join(cpu.flags) or 'none that llama.cpp accelerates'}",
        ]
        if self.memory:
            m = self.memory
            lines.append(
                f"RAM: {gib(m.total)} total, {gib(m.available)} available, swap {gib(m.swap_total)}"
            )
        if len(self.numa_nodes) > 1:
            nodes = "; ".join(f"node{n.id}: {len(n.cpus)} CPUs, {gib(n.mem_total)}" for n in self.numa_nodes)
            lines.append(f"NUMA: {len(self.numa_nodes)} nodes ({nodes})")
        if self.disk_free is not None:
            lines.append(f"Disk: {file_size(self.disk_free)} free in {self.models_dir}")
        for i, gpu in enumerate(self.gpus):
            lines.append(f"GPU {i}: {_describe_gpu(gpu)}")
        if not self.gpus:
            lines.append("GPU: none found")
        lines.extend(f"Note: {note}" for note in self.notes)
        return lines


def _describe_gpu(gpu: Gpu) -> str:
    parts = [gpu.name]
    if gpu.unified_memory and gpu.vram_total is not None:
        parts.append(f"{gib(gpu.vram_total)} unified memory")
    elif gpu.vram_total is not None:
        free = f" ({gib(gpu.vram_free)} free)" if gpu.vram_free is not None else ""
        parts.append(f"{gib(gpu.vram_total)} VRAM{free}")
    if gpu.memory_bandwidth:
        parts.append(f"{gpu.memory_bandwidth / 1e9:.0f} GB/s memory")
    if gpu.compute_capability:
        parts.append("compute capability {}.{}".format(*gpu.compute_capability))
    if gpu.pcie_gen and gpu.pcie_width:
        link = f"PCIe {gpu.pcie_gen} x{gpu.pcie_width}"
        if gpu.pcie_gen_max and gpu.pcie_width_max:
            link += f" (max {gpu.pcie_gen_max} x{gpu.pcie_width_max})"
        parts.append(link)
    if gpu.driver:
        parts.append(f"driver {gpu.driver}")
    return ", ".join(parts)
