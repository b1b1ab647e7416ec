"""The memory model against what llama.cpp really allocates, on the CPU.

"Weights" in the model are each tensor's bytes counted once. The engine loads these with
use_mmap=False so llama.cpp's weight buffers hold exactly that (plain CPU buffers plus
CPU_REPACK copies that replace, not double, the quantized matrices). With mmap, llama.cpp also
logs the mapped file span, whose pages behind repacked copies are dropped page cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.advisor.memory import compute_buffer_bytes
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import LoadParams
from app.gguf.info import read_model
from app.synthetic import SyntheticSpec, write_synthetic_model
from tests.memory_testing import modelled_and_real

# Shapes with few layers: the engine keeps the last 400 llama.cpp log lines, and a model with
# many tensors pushes the buffer-size lines out of them (tiny with n_layer=8 already does).
SHAPES = {
    "tiny": (SyntheticSpec.preset("tiny"), 0.15),
    "wide": (SyntheticSpec.preset("tiny", n_embd=256, n_expert=32, n_expert_used=4, n_ff_exp=128,
                                  n_vocab=2048), 0.15),
    "qwen3-30b-1-layer": (SyntheticSpec.preset("qwen3-30b-a3b", n_layer=1), 0.01),
    "qwen3-30b-2-layers": (SyntheticSpec.preset("qwen3-30b-a3b", n_layer=2), 0.01),
}



@pytest.fixture(scope="module")
def shape_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("calibration")
    return {name: write_synthetic_model(folder / f"{name}.gguf", spec)[0]
            for name, (spec, _) in SHAPES.items()}


@pytest.mark.parametrize("n_ctx", [512, 4096])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_memory_model_matches_what_llama_cpp_allocates(
        engine: EngineClient, shape_files: dict[str, Path], shape: str, n_ctx: int) -> None:
    cpu, real = modelled_and_real(engine, shape_files[shape], n_ctx)
    assert cpu.kv == pytest.approx(real["kv_cache"], rel=0.01)
    assert cpu.weights == pytest.approx(real["weights"], rel=0.03)
    _, tolerance = SHAPES[shape]
    # the log rounds to 0.01 MiB: allow that besides the relative error
    assert abs(cpu.compute - real["compute"]) <= tolerance * real["compute"] + 0.01 * 2**20


def test_compute_grows_with_the_ubatch_as_modelled(
        engine: EngineClient, shape_files: dict[str, Path]) -> None:
    path = shape_files["qwen3-30b-1-layer"]
    for n_ubatch in (128, 512):
        plan = PlacementPlan(n_ctx=2048, n_threads=2, n_ubatch=n_ubatch, use_mmap=False)
        result = engine.load(LoadParams(model=str(path), placement=plan, telemetry=False))
        real = sum(a.bytes for a in result.allocations if a.kind == "compute")
        assert compute_buffer_bytes(read_model(path), plan) == pytest.approx(real, rel=0.01)
