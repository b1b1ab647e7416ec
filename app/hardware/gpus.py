"""Which GPUs there are: NVIDIA through NVML, AMD and Intel through DRM sysfs, Apple silicon."""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from app.hardware.files import read_int, read_text, sysctl
from app.hardware.model import Gpu

T = TypeVar("T")
CARD_DIR = re.compile(r"card(\d+)")
DRM_VENDORS = {"0x1002": "amd", "0x8086": "intel"}
NVIDIA_VENDOR = "0x10de"
# PCI sysfs link speed ("16.0 GT/s PCIe") -> PCIe generation
GTS_TO_GEN = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}


def nvidia_gpus() -> tuple[list[Gpu], str | None]:
    """NVIDIA GPUs through NVML, or none and the reason NVML could not be used."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML unavailable: {exc} (no NVIDIA driver?)"
    try:
        return [_nvml_gpu(pynvml, pynvml.nvmlDeviceGetHandleByIndex(i))
                for i in range(pynvml.nvmlDeviceGetCount())], None  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a half-working driver may raise anything; never crash here
        return [], f"NVML failed while listing GPUs: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _nvml_gpu(nvml, handle) -> Gpu:  # noqa: ANN001 - pynvml has no types
    def optional(query: Callable[[object], T]) -> T | None:
        # Some boards answer NotSupported for PCIe queries (SXM, Grace Hopper's C2C link).
        try:
            return query(handle)
        except nvml.NVMLError:
            return None

    name = nvml.nvmlDeviceGetName(handle)
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    pci = optional(nvml.nvmlDeviceGetPciInfo)
    return Gpu(
        vendor="nvidia",
        name=name.decode() if isinstance(name, bytes) else name,
        vram_total=int(mem.total),
        vram_free=int(mem.free),
        driver="nvidia",
        pci_device_id=f"0x{pci.pciDeviceId >> 16:04x}" if pci else None,
        compute_capability=optional(nvml.nvmlDeviceGetCudaComputeCapability),
        pcie_gen=optional(nvml.nvmlDeviceGetCurrPcieLinkGeneration),
        pcie_width=optional(nvml.nvmlDeviceGetCurrPcieLinkWidth),
        pcie_gen_max=optional(nvml.nvmlDeviceGetMaxPcieLinkGeneration),
        pcie_width_max=optional(nvml.nvmlDeviceGetMaxPcieLinkWidth),
        memory_bandwidth=_nvml_bandwidth(nvml, optional),
    )


def _nvml_bandwidth(nvml, optional: Callable) -> float | None:  # noqa: ANN001
    """Peak memory bandwidth: the max memory clock (MHz) x 2 transfers per clock x bus bytes.

    NVML reports GDDR6X's and HBM's clocks so that this double-data-rate formula holds
    (RTX 4090: 10501 MHz x 2 x 48 bytes = 1008 GB/s; H100 SXM: 2619 MHz x 2 x 640 = 3.35 TB/s).
    """
    clock = optional(lambda h: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM))
    width = optional(nvml.nvmlDeviceGetMemoryBusWidth)
    if not clock or not width:
        return None
    return clock * 1e6 * 2 * width / 8


def drm_gpus(root: Path, notes: list[str]) -> tuple[list[Gpu], list[str]]:
    """AMD and Intel GPUs from root/sys/class/drm, and the names of NVIDIA cards seen there."""
    if not (root / "sys").is_dir():
        notes.append("AMD and Intel GPU information unavailable (no /sys)")
        return [], []
    try:
        cards = [(int(m.group(1)), p) for p in (root / "sys/class/drm").iterdir()
                 if (m := CARD_DIR.fullmatch(p.name))]  # fmt: skip
    except OSError:
        return [], []  # no DRM driver loaded: no AMD or Intel GPU in use
    gpus, nvidia_cards = [], []
    for _, card in sorted(cards):
        device = card / "device"
        vendor = read_text(device / "vendor")
        if vendor == NVIDIA_VENDOR:
            nvidia_cards.append(card.name)
        if vendor not in DRM_VENDORS:
            continue
        device_id = read_text(device / "device")
        vram_total = read_int(device / "mem_info_vram_total")  # amdgpu only
        vram_used = read_int(device / "mem_info_vram_used")
        vram_free = vram_total - vram_used if vram_total is not None and vram_used is not None else None
        gen, width = _pcie_link(device, "current")
        gen_max, width_max = _pcie_link(device, "max")
        gpus.append(
            Gpu(
                vendor=DRM_VENDORS[vendor],
                name=read_text(device / "product_name") or f"{DRM_VENDORS[vendor].upper()} GPU {device_id}",
                vram_total=vram_total,
                vram_free=vram_free,
                driver=_driver(device),
                pci_device_id=device_id,
                pcie_gen=gen,
                pcie_width=width,
                pcie_gen_max=gen_max,
                pcie_width_max=width_max,
            )
        )
    return gpus, nvidia_cards


def apple_gpu() -> Gpu | None:
    """Apple silicon's GPU, which shares the machine's RAM; None on other Macs and elsewhere."""
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return None
    memsize = sysctl("hw.memsize")
    return Gpu(
        vendor="apple",
        name=sysctl("machdep.cpu.brand_string") or "Apple silicon",
        vram_total=int(memsize) if memsize and memsize.isdigit() else None,
        vram_free=None,
        driver="metal",
        unified_memory=True,
    )


def _driver(device: Path) -> str | None:
    try:
        return Path(os.readlink(device / "driver")).name
    except OSError:
        uevent = read_text(device / "uevent") or ""
        found = re.search(r"^DRIVER=(\S+)$", uevent, re.MULTILINE)
        return found.group(1) if found else None


def _pcie_link(device: Path, which: str) -> tuple[int | None, int | None]:
    speed = read_text(device / f"{which}_link_speed") or ""
    return GTS_TO_GEN.get(speed.split(" ")[0]), read_int(device / f"{which}_link_width")
