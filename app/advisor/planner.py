"""The planner: a placement that fits a machine, with a verdict and reasons in plain words.

One GPU (the first): dense parts (attention, norms, router, shared experts, output) and the
KV cache go to the GPU first; then routed experts, last layers first, so the plan is "routed
experts of the first N layers in RAM" with the smallest N that fits the VRAM budget. What is
in RAM must fit the RAM budget, or llama.cpp's mmap streams it from the SSD (slow).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from app.advisor.memory import RAM_HEADROOM, VRAM_HEADROOM, DeviceMemory, memory_by_device
from app.engine.placement import CPU_DEVICE, PlacementPlan
from app.gguf_info import GGUFModel
from app.hardware.model import Gpu, Hardware

Verdict = Literal["fits_on_gpu", "fits_with_expert_offload", "fits_in_ram", "fits_streaming_from_ssd",
                  "does_not_fit"]
# Verdicts that run at full speed for the machine (no SSD reads on every token).
FITTING: frozenset[str] = frozenset({"fits_on_gpu", "fits_with_expert_offload", "fits_in_ram"})
GPU_BACKEND_PREFIX = {"nvidia": "CUDA", "apple": "Metal"}  # others: Vulkan


@dataclass
class Plan:
    """What the advisor proposes: the placement to load, whether it fits, and why."""

    placement: PlacementPlan
    verdict: Verdict
    reasons: list[str]
    memory: list[DeviceMemory]  # CPU first, then the GPU
    experts_in_ram_layers: int = 0  # N: routed experts of the first N layers are in RAM
    warnings: list[str] = field(default_factory=list)

    def device(self, name: str) -> DeviceMemory:
        return next(m for m in self.memory if m.device == name)


def gpu_device_name(gpu: Gpu, index: int) -> str:
    """The ggml device name llama.cpp would give this GPU ("CUDA0", "Metal", "Vulkan1")."""
    prefix = GPU_BACKEND_PREFIX.get(gpu.vendor, "Vulkan")
    return prefix if prefix == "Metal" else f"{prefix}{index}"


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def plan_for(model: GGUFModel, hardware: Hardware, n_ctx: int,
             base: PlacementPlan | None = None) -> Plan:
    """The placement of ``model`` on ``hardware`` for a context of ``n_ctx`` tokens.

    ``base`` carries the settings the planner does not choose (cache types, n_ubatch, ...).
    """
    base = replace(base or PlacementPlan(), n_ctx=n_ctx)
    ram_budget = hardware.memory.available - RAM_HEADROOM if hardware.memory else None
    gpu = _usable_gpu(hardware)
    if gpu is None:
        placement = replace(base, n_gpu_layers=0, experts_in_ram="none")
        memory = memory_by_device(model, placement, [])
        verdict, reasons, warnings = _ram_verdict("fits_in_ram", memory[0], ram_budget)
        reasons.insert(0, "no usable GPU: every layer runs from RAM")
        return Plan(placement, verdict, reasons, memory, warnings=warnings)

    name = gpu_device_name(gpu, hardware.gpus.index(gpu))
    vram_budget = (gpu.vram_free or 0) - VRAM_HEADROOM
    n_layer = model.n_layer
    moe = model.moe_layers

    def layout(first_n: int) -> tuple[PlacementPlan, list[DeviceMemory]]:
        shortcut = "none" if first_n == 0 else "all" if first_n >= n_layer else first_n
        placement = replace(base, n_gpu_layers=-1, experts_in_ram=shortcut)
        return placement, memory_by_device(model, placement, [name])

    # GPU bytes fall as N grows: binary search for the smallest N whose GPU part fits.
    low, high = 0, n_layer
    if _gpu_total(layout(high)[1], name) > vram_budget:
        placement, memory = layout(high)
        need = _gpu_total(memory, name)
        return Plan(placement, "does_not_fit", [
            f"even with every routed expert in RAM, the GPU part needs {gb(need)} "
            f"(attention, shared weights, output, {gb(_by(memory, name).kv)} KV cache, "
            f"{gb(_by(memory, name).compute)} compute) and {gpu.name} has {gb(max(vram_budget, 0))} "
            f"usable ({gb(gpu.vram_free or 0)} free less {gb(VRAM_HEADROOM)} headroom)",
            "lower the context size or use a q8_0 KV cache",
        ], memory, experts_in_ram_layers=n_layer)
    while low < high:
        mid = (low + high) // 2
        if _gpu_total(layout(mid)[1], name) <= vram_budget:
            high = mid
        else:
            low = mid + 1
    placement, memory = layout(low)
    in_ram = [layer for layer in moe if layer < low]
    reasons = [f"GPU {gpu.name}: {gb(_gpu_total(memory, name))} of {gb(vram_budget)} usable "
               f"(KV cache {gb(_by(memory, name).kv)} for {n_ctx:,} tokens)"]
    if in_ram:
        expert_bytes = sum(t.n_bytes for t in model.tensors
                           if t.tensor_class == "routed_experts" and t.layer is not None and t.layer < low)
        reasons.append(f"routed experts of {len(in_ram)} of {len(moe)} layers in RAM ({gb(expert_bytes)})")
        first = "fits_with_expert_offload"
    else:
        reasons.append("every layer, routed experts included, is on the GPU")
        first = "fits_on_gpu"
    verdict, more, warnings = _ram_verdict(first, memory[0], ram_budget)
    return Plan(placement, verdict, reasons + more, memory, experts_in_ram_layers=low, warnings=warnings)


def max_context(model: GGUFModel, hardware: Hardware, base: PlacementPlan | None = None,
                step: int = 256, accept: frozenset[str] = FITTING) -> int:
    """The largest context (a multiple of ``step``, at most n_ctx_train) whose plan's verdict
    is in ``accept``; 0 when not even ``step`` tokens fit."""
    limit = max(model.n_ctx_train, step) // step
    if plan_for(model, hardware, step, base).verdict not in accept:
        return 0
    low, high = 1, limit  # in steps; low always fits
    while low < high:
        mid = (low + high + 1) // 2
        if plan_for(model, hardware, mid * step, base).verdict in accept:
            low = mid
        else:
            high = mid - 1
    return low * step


def _usable_gpu(hardware: Hardware) -> Gpu | None:
    """The first GPU with known, separate VRAM (unified memory is planned as RAM for now)."""
    for gpu in hardware.gpus:
        if gpu.vram_free and not gpu.unified_memory:
            return gpu
    return None


def _by(memory: list[DeviceMemory], name: str) -> DeviceMemory:
    return next(m for m in memory if m.device == name)


def _gpu_total(memory: list[DeviceMemory], name: str) -> int:
    return _by(memory, name).total


def _ram_verdict(verdict: Verdict, cpu: DeviceMemory, ram_budget: int | None
                 ) -> tuple[Verdict, list[str], list[str]]:
    """Downgrade ``verdict`` when the RAM part does not fit ``ram_budget``."""
    assert cpu.device == CPU_DEVICE
    if ram_budget is None:
        return verdict, [f"RAM: {gb(cpu.total)} needed (available RAM unknown)"], []
    if cpu.total <= ram_budget:
        return verdict, [f"RAM: {gb(cpu.total)} of {gb(ram_budget)} usable"], []
    resident = cpu.total - cpu.weights  # KV cache and buffers cannot be paged from the file
    if resident > ram_budget:
        return "does_not_fit", [
            f"RAM: the KV cache and buffers alone need {gb(resident)}, {gb(max(ram_budget, 0))} usable"
        ], []
    short = cpu.total - ram_budget
    return "fits_streaming_from_ssd", [f"RAM: {gb(cpu.total)} needed, {gb(ram_budget)} usable"], [
        f"{gb(short)} of weights will be read from the SSD as tokens need them: expect a "
        "small fraction of the speed; more RAM or a smaller quant avoids it"
    ]
