"""The memory model against what the engine's llama.cpp reports, for the calibration tests."""

from __future__ import annotations

from pathlib import Path

from app.advisor.memory import DeviceMemory, memory_by_device
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import LoadParams
from app.gguf.info import read_model
from app.hardware.cpu import detect_cpu

# llama.cpp repacks a CPU-only load's matrices into AMX's layout on CPUs that have it
HAS_AMX = "amx_int8" in detect_cpu(Path("/"), True, []).flags


def modelled_and_real(engine: EngineClient, model: Path, n_ctx: int) -> tuple[DeviceMemory, dict[str, int]]:
    """The model's CPU figures and llama.cpp's buffers by kind (weights, kv_cache, compute) for
    a CPU-only load without mmap (the weight buffers then hold each tensor once; with mmap
    llama.cpp also reports the mapped file beside the repacked copies)."""
    plan = PlacementPlan(n_ctx=n_ctx, n_threads=2, use_mmap=False)
    result = engine.load(LoadParams(model=str(model), placement=plan, telemetry=False))
    real: dict[str, int] = {}
    for allocation in result.allocations:
        real[allocation.kind] = real.get(allocation.kind, 0) + allocation.bytes
    (cpu,) = memory_by_device(read_model(model), plan, [], amx=HAS_AMX)
    return cpu, real
