"""What the CPU is: model, cores, and the instruction sets llama.cpp has kernels for."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import psutil

from app.hardware.files import read_text, sysctl
from app.hardware.model import Cpu

X86_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx_vnni",
    "avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512_vnni", "avx512_bf16",
    "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
# arm64 /proc/cpuinfo "Features" names -> llama.cpp's names
ARM_FEATURES = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16",
                "sve": "sve", "sve2": "sve2", "sme": "sme"}  # fmt: skip
ARM_FLAGS = tuple(ARM_FEATURES.values())
# arm64 cpuinfo has no model name, only implementer and part numbers
ARM_PARTS = {
    ("0x41", "0xd0c"): "ARM Neoverse-N1",
    ("0x41", "0xd40"): "ARM Neoverse-V1",
    ("0x41", "0xd49"): "ARM Neoverse-N2",
    ("0x41", "0xd4f"): "ARM Neoverse-V2",
    ("0x41", "0xd8e"): "ARM Neoverse-N3",
    ("0x41", "0xd84"): "ARM Neoverse-V3",
    ("0x61", "0x000"): "Apple",
    ("0xc0", "0xac3"): "Ampere-1",
}


def detect_cpu(root: Path, live: bool, notes: list[str]) -> Cpu:
    """The CPU from root/proc/cpuinfo on Linux, sysctl on macOS, else platform and psutil."""
    if live and sys.platform == "darwin":
        return _macos_cpu()
    if live and not sys.platform.startswith("linux"):
        return _fallback_cpu()
    text = read_text(root / "proc/cpuinfo")
    cpu = _parse_cpuinfo(text, live) if text else None
    if cpu:
        return cpu
    if text:
        notes.append("could not make sense of /proc/cpuinfo; CPU details come from psutil")
    else:
        notes.append("CPU details unavailable (no readable /proc/cpuinfo); cores come from psutil")
    return _fallback_cpu()


def _parse_cpuinfo(text: str, live: bool) -> Cpu | None:
    blocks = [dict(_fields(block)) for block in text.split("\n\n") if block.strip()]
    processors = [b for b in blocks if "processor" in b]
    if not processors:
        return None
    first = processors[0]
    merged = {k: v for b in blocks for k, v in b.items()}  # old arm64 kernels list model once
    if "flags" in first:
        arch = "x86_64"
        present = set(first["flags"].split())
        flags = tuple(f for f in X86_FLAGS if f in present)
    else:
        arch = "arm64"
        present = {ARM_FEATURES[f] for f in merged.get("Features", "").split() if f in ARM_FEATURES}
        flags = tuple(f for f in ARM_FLAGS if f in present)
    model = first.get("model name") or merged.get("model name") or _arm_model(merged) or "unknown CPU"
    logical = len(processors)
    cores = {(b.get("physical id"), b["core id"]) for b in processors if "core id" in b}
    if cores:
        physical = len(cores)
    elif live:
        physical = psutil.cpu_count(logical=False) or logical
    else:
        physical = logical  # arm64 cpuinfo has no core ids; arm64 server cores run one thread each
    return Cpu(model=model, arch=arch, physical_cores=physical, logical_cores=logical, flags=flags)


def _fields(block: str) -> list[tuple[str, str]]:
    pairs = []
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs


def _arm_model(fields: dict[str, str]) -> str | None:
    implementer, part = fields.get("CPU implementer"), fields.get("CPU part")
    if not implementer or not part:
        return None
    return ARM_PARTS.get((implementer.lower(), part.lower()), f"ARM implementer {implementer} part {part}")


def _macos_cpu() -> Cpu:
    arm = platform.machine() == "arm64"
    if arm:
        # Every Apple silicon core has NEON; the newer extensions are reported one by one.
        flags = ["neon"] + [
            name
            for name, key in (("dotprod", "FEAT_DotProd"), ("i8mm", "FEAT_I8MM"), ("bf16", "FEAT_BF16"))
            if sysctl(f"hw.optional.arm.{key}") == "1"
        ]
    else:
        words = f"{sysctl('machdep.cpu.features') or ''} {sysctl('machdep.cpu.leaf7_features') or ''}"
        present = {w.lower().replace(".", "_") for w in words.split()}
        flags = [f for f in X86_FLAGS if f in present]
    logical = _int(sysctl("hw.logicalcpu")) or psutil.cpu_count() or 1
    return Cpu(
        model=sysctl("machdep.cpu.brand_string") or platform.processor() or "unknown CPU",
        arch="arm64" if arm else "x86_64",
        physical_cores=_int(sysctl("hw.physicalcpu")) or logical,
        logical_cores=logical,
        flags=tuple(flags),
    )


def _fallback_cpu() -> Cpu:
    logical = psutil.cpu_count() or 1
    return Cpu(
        model=platform.processor() or platform.machine() or "unknown CPU",
        arch=platform.machine() or "unknown",
        physical_cores=psutil.cpu_count(logical=False) or logical,
        logical_cores=logical,
        flags=(),
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
