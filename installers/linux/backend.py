"""Which llama.cpp GPU backend to build on this Linux machine, and what that build needs.

A backend is chosen only when a GPU it can drive is present: a CUDA toolkit (nvcc) on a
machine without an NVIDIA GPU builds an engine that nothing here can run, so that machine
gets the CPU build (``--backend cuda`` still forces it). Order: CUDA, HIP (ROCm), Vulkan, CPU.
Standard library only: this runs before MoE Desk's virtual environment exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

BACKENDS = ("cpu", "cuda", "hip", "vulkan")
PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Tool:
    """A build prerequisite: what to look for, and the packages that provide it."""

    what: str  # in the user's words: "a C++ compiler"
    apt: str  # Debian/Ubuntu package(s)
    dnf: str  # Fedora/RHEL package(s)
    note: str = ""  # where the packages come from, when not from the distribution


@dataclass(frozen=True)
class Backend:
    """The engine build chosen: llama.cpp's CMake options and why."""

    name: str  # one of BACKENDS
    cmake_args: str  # passed to installers/install.py as CMAKE_ARGS
    reason: str  # what was found, in a sentence
    build_env: dict[str, str] = field(default_factory=dict)  # compilers CMake should use
    missing: tuple[Tool, ...] = ()  # what this backend's build needs and the machine lacks


NVCC = Tool("the CUDA compiler nvcc", "nvidia-cuda-toolkit", "cuda-toolkit",
            "or NVIDIA's CUDA repository for a newer toolkit")
HIPCC = Tool("the ROCm HIP compiler (hipcc, hipconfig)", "rocm-hip-sdk", "rocm-hip-devel",
             "Debian/Ubuntu: from AMD's ROCm repository")
GLSLC = Tool("the Vulkan shader compiler glslc", "glslc", "glslc")
VULKAN_HEADERS = Tool("the Vulkan headers and loader", "libvulkan-dev", "vulkan-loader-devel")


def _output(command: list[str]) -> str | None:
    """What ``command`` prints, or None if it is missing, fails or hangs (a wedged driver)."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def nvidia_gpus() -> list[tuple[str, str | None]]:
    """(name, compute capability like "8.6" or None) per NVIDIA GPU that nvidia-smi lists."""
    text = _output(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
    if text is None:  # drivers before 510 know no compute_cap field
        text = _output(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    gpus = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not parts[0]:
            continue
        cap = parts[1] if len(parts) > 1 and re.fullmatch(r"\d+\.\d+", parts[1]) else None
        gpus.append((parts[0], cap))
    return gpus


def cuda_architectures(gpus: list[tuple[str, str | None]]) -> str | None:
    """CMAKE_CUDA_ARCHITECTURES for these GPUs ("86;90"), or None if any is unknown: then
    llama.cpp's default list is built, which is slower but runs everywhere."""
    caps = [cap for _, cap in gpus]
    if not caps or None in caps:
        return None
    return ";".join(sorted({c.replace(".", "") for c in caps if c}, key=int))


def find_nvcc() -> Path | None:
    """nvcc on PATH, else in CUDA_HOME or /usr/local/cuda, where the toolkit installs it."""
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return Path(root) / "bin" / "nvcc"
    return None


def amd_gpu_targets() -> list[str]:
    """The gfx targets of the AMD GPUs rocminfo lists (CPU agents have no gfx name)."""
    text = _output(["rocminfo"]) or ""
    return sorted(set(re.findall(r"^\s*Name:\s+(gfx[0-9a-f]+)\s*$", text, re.MULTILINE)))


def vulkan_gpus() -> list[str]:
    """Vulkan devices that are real GPUs (llvmpipe, a CPU rasteriser, is left out)."""
    text = _output(["vulkaninfo", "--summary"]) or ""
    names = re.findall(r"deviceName\s*=\s*(.+)", text)
    types = re.findall(r"deviceType\s*=\s*(\S+)", text)
    return [n.strip() for n, t in zip(names, types, strict=False) if "CPU" not in t]


def _cuda(gpus: list[tuple[str, str | None]]) -> Backend:
    arch = cuda_architectures(gpus)
    args = "-DGGML_CUDA=on" + (f" -DCMAKE_CUDA_ARCHITECTURES={arch}" if arch else "")
    if gpus:
        found = ", ".join(f"{n} (compute capability {c})" if c else n for n, c in gpus)
        reason = f"NVIDIA GPU found by nvidia-smi: {found}"
    else:
        reason = "asked for with --backend cuda (no GPU seen: building for all architectures)"
    nvcc = find_nvcc()
    env = {"CUDACXX": str(nvcc)} if nvcc and not shutil.which("nvcc") else {}
    return Backend("cuda", args, reason, env, () if nvcc else (NVCC,))


def _hip(targets: list[str]) -> Backend:
    args = "-DGGML_HIP=on" + (f" -DGPU_TARGETS={';'.join(targets)}" if targets else "")
    reason = (f"AMD GPU found by rocminfo: {', '.join(targets)}" if targets
              else "asked for with --backend hip (no GPU seen: building for ROCm's default targets)")
    env: dict[str, str] = {}
    llvm = _output(["hipconfig", "-l"])
    root = _output(["hipconfig", "-R"])
    if llvm and root:  # llama.cpp's HIP build wants ROCm's clang as the HIP compiler
        env = {"HIPCXX": f"{llvm.strip()}/clang", "HIP_PATH": root.strip()}
    return Backend("hip", args, reason, env, () if env else (HIPCC,))


def _vulkan(gpus: list[str]) -> Backend:
    reason = (f"Vulkan GPU found by vulkaninfo: {', '.join(gpus)}" if gpus
              else "asked for with --backend vulkan")
    headers = any(Path(d, "vulkan", "vulkan.h").is_file() for d in ("/usr/include",
                                                                    "/usr/local/include"))
    missing = tuple(t for t, ok in ((GLSLC, shutil.which("glslc")), (VULKAN_HEADERS, headers))
                    if not ok)
    return Backend("vulkan", "-DGGML_VULKAN=on", reason, {}, missing)


def _cpu(reason: str) -> Backend:
    # No options: the same build installers/install.py makes by default, so its cache is shared
    return Backend("cpu", "", reason)


def choose_backend(requested: str = "auto") -> Backend:
    """The backend ``requested`` (one of BACKENDS), or for "auto" the best one this machine
    has a GPU for."""
    if requested == "cpu":
        return _cpu("asked for with --backend cpu")
    if requested == "cuda":
        return _cuda(nvidia_gpus())
    if requested == "hip":
        return _hip(amd_gpu_targets())
    if requested == "vulkan":
        return _vulkan(vulkan_gpus())
    if requested != "auto":
        raise ValueError(f"unknown backend {requested!r}: choose one of auto, {', '.join(BACKENDS)}")
    gpus = nvidia_gpus()
    if gpus:
        return _cuda(gpus)
    targets = amd_gpu_targets()
    if targets:
        return _hip(targets)
    vulkan = vulkan_gpus()
    if vulkan:
        return _vulkan(vulkan)
    why = "no NVIDIA, AMD or Vulkan GPU found"
    if find_nvcc():
        why += " (a CUDA toolkit is installed but nvidia-smi lists no GPU; --backend cuda forces it)"
    return _cpu(why)
