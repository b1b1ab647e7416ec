"""What this machine has for running a model: CPU, RAM, NUMA nodes, GPUs, free disk.

Plain Python (no Qt, no llama.cpp). Every probe degrades gracefully: what it cannot read
becomes a line in ``Hardware.notes`` rather than an exception, so a container without /sys
or a machine without an NVIDIA driver still gets a useful answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.hardware.cpu import detect_cpu
from app.hardware.gpus import apple_gpu, drm_gpus, nvidia_gpus
from app.hardware.memory import detect_disk_free, detect_memory, detect_numa
from app.hardware.model import Cpu, Gpu, Hardware, Memory, NumaNode

__all__ = ["Cpu", "Gpu", "Hardware", "Memory", "NumaNode", "detect"]


def detect(root: Path = Path("/"), models_dir: Path | None = None, nvml: bool = True) -> Hardware:
    """Detect this machine's hardware, or a recorded Linux tree's when root is not "/".

    root prefixes every /proc and /sys path; a recorded tree is read as Linux whatever the
    host is, and its RAM comes from root/proc/meminfo instead of psutil. nvml=False skips
    NVIDIA GPUs (NVML reads the real driver, never files under root).
    """
    live = Path(root) == Path("/")
    linux = not live or sys.platform.startswith("linux")
    notes: list[str] = []
    cpu = detect_cpu(root, live, notes)
    memory = detect_memory(root, live, notes)
    numa = detect_numa(root, notes) if linux else []
    gpus: list[Gpu] = []
    nvml_error = None
    if nvml:
        gpus, nvml_error = nvidia_gpus()
    if linux:
        amd_intel, nvidia_cards = drm_gpus(root, notes)
        gpus += amd_intel
        if nvml_error:
            notes.append(f"no NVIDIA GPUs: {nvml_error}")
            if nvidia_cards:
                notes.append(f"an NVIDIA GPU is present ({', '.join(nvidia_cards)}) but NVML cannot use it")
    elif nvml_error and sys.platform != "darwin":
        notes.append(f"no NVIDIA GPUs: {nvml_error}")
    if live and (apple := apple_gpu()):
        gpus.append(apple)
    disk_free = detect_disk_free(models_dir, notes) if models_dir is not None else None
    return Hardware(
        cpu=cpu,
        memory=memory,
        numa_nodes=numa,
        gpus=gpus,
        models_dir=models_dir,
        disk_free=disk_free,
        nvml_error=nvml_error,
        notes=notes,
    )
