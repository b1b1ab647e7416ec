"""Which model to suggest first, by the memory this machine has (RAM + VRAM). One table.

Sizes are the Hub files' (GGUF) sizes; the rule is that the file plus a working context fits
in RAM + VRAM with some room to spare for the system.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.hardware import Hardware

GB = 10**9


@dataclass(frozen=True)
class Recommendation:
    name: str
    repo: str  # Hugging Face repo id
    quant: str
    size_gb: float
    why: str


# (at least this many GB of RAM + VRAM, what to suggest), largest first
TABLE: list[tuple[int, Recommendation]] = [
    (320, Recommendation("DeepSeek-R1-0528", "unsloth/DeepSeek-R1-0528-GGUF", "UD-Q2_K_XL", 251,
                         "671B parameters, 37B active: the largest open reasoning model")),
    (160, Recommendation("Qwen3-235B-A22B", "unsloth/Qwen3-235B-A22B-GGUF", "Q4_K_M", 142,
                         "235B parameters, 22B active: near the best open models")),
    (128, Recommendation("gpt-oss-120b", "unsloth/gpt-oss-120b-GGUF", "F16", 65,
                         "117B parameters, 5B active: fast on a 128 GB machine")),
    (72, Recommendation("gpt-oss-120b", "unsloth/gpt-oss-120b-GGUF", "F16", 65,
                        "117B parameters, 5B active: fits with a little room")),
    (28, Recommendation("Qwen3-30B-A3B", "unsloth/Qwen3-30B-A3B-GGUF", "Q4_K_M", 18.6,
                        "30B parameters, 3B active: quick even with its experts in RAM")),
    (0, Recommendation("Qwen3-30B-A3B", "unsloth/Qwen3-30B-A3B-GGUF", "UD-Q2_K_XL", 11.8,
                       "the small MoE at 2-bit: fits a 16 GB machine")),
]


def memory_gb(hardware: Hardware) -> float:
    """RAM plus the VRAM of GPUs with their own memory (unified memory is the RAM)."""
    ram = hardware.memory.total if hardware.memory else 0
    vram = sum(g.vram_total or 0 for g in hardware.gpus if not g.unified_memory)
    return (ram + vram) / GB


def recommend(hardware: Hardware) -> Recommendation:
    total = memory_gb(hardware)
    return next(rec for minimum, rec in TABLE if total >= minimum)
