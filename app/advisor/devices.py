"""Which GPUs a plan may use: those detected on the machine that the llama.cpp build can drive.

Without the engine's BuildInfo the advisor assumes a build for the detected GPUs (planning
before the engine was ever started). With it, only the build's GPU devices count, named as
the build names them; a detected GPU that no backend of the build drives is reported with
the install command that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.protocol import BuildInfo, DeviceInfo
from app.hardware.model import Gpu, Hardware

# vendor -> (ggml device name prefix, backend in words, CMake option of a build for it)
BACKENDS = {
    "nvidia": ("CUDA", "CUDA", "-DGGML_CUDA=on"),
    "amd": ("ROCm", "ROCm (HIP)", "-DGGML_HIP=on"),
    "apple": ("Metal", "Metal", "-DGGML_METAL=on"),
    "intel": ("Vulkan", "Vulkan", "-DGGML_VULKAN=on"),
}
INSTALL = 'CMAKE_ARGS="{flag}" python3 installers/install.py'


@dataclass
class PlanGpu:
    """A GPU the plan may put layers on."""

    device: str  # the ggml device name the engine knows it by: "CUDA0", "Vulkan1", ...
    name: str  # what a person calls it: "NVIDIA GeForce RTX 4090"
    free: int  # bytes of VRAM free now
    gpu: Gpu | None  # the detected GPU (None: known only from the build)


def discrete(hardware: Hardware) -> list[Gpu]:
    """Detected GPUs with their own, known VRAM (unified memory is planned as RAM for now)."""
    return [g for g in hardware.gpus if g.vram_free and not g.unified_memory]


def usable_gpus(hardware: Hardware, build: BuildInfo | None = None) -> tuple[list[PlanGpu], list[str]]:
    """The GPUs a plan may use, in the engine's device order, and reasons for any left out."""
    detected = discrete(hardware)
    if build is None:
        counters: dict[str, int] = {}
        gpus = []
        for gpu in detected:
            prefix = BACKENDS.get(gpu.vendor, BACKENDS["intel"])[0]
            index = counters.get(prefix, 0)
            counters[prefix] = index + 1
            gpus.append(PlanGpu(f"{prefix}{index}", gpu.name, gpu.vram_free or 0, gpu))
        return gpus, []
    devices = [d for d in build.devices if d.kind == "gpu"]
    matched = _match(devices, detected)
    gpus = [PlanGpu(d.name, gpu.name if gpu else d.description,
                    d.memory_free or (gpu.vram_free if gpu else 0) or 0, gpu)
            for d, gpu in zip(devices, matched, strict=True)]
    used = {id(g) for g in matched if g is not None}
    reasons = []
    for gpu in detected:
        if id(gpu) in used or gpus:
            continue  # with another GPU usable, a second unmatched one is only a detail
        _, backend, flag = BACKENDS.get(gpu.vendor, BACKENDS["intel"])
        reasons.append(
            f"{gpu.name} is present, but this llama.cpp build has no {backend} backend "
            f"(it has: {', '.join(build.backends) or 'none'}), so every layer runs from RAM; "
            f"to use the GPU, reinstall the engine with {INSTALL.format(flag=flag)}")
    return gpus, reasons


def _match(devices: list[DeviceInfo], detected: list[Gpu]) -> list[Gpu | None]:
    """The detected GPU behind each build device: the n-th device of a vendor's backend is
    that vendor's n-th GPU (CUDA and ROCm number GPUs in PCI order, as NVML and DRM list
    them); a Vulkan device takes the next GPU not yet matched."""
    taken: set[int] = set()
    result: list[Gpu | None] = []
    for device in devices:
        vendors = [v for v, (prefix, _, _) in BACKENDS.items()
                   if device.name.startswith(prefix) and prefix != "Vulkan"]
        candidates = [g for g in detected if id(g) not in taken
                      and (not vendors or g.vendor in vendors)]
        gpu = candidates[0] if candidates else None
        if gpu is not None:
            taken.add(id(gpu))
        result.append(gpu)
    return result
