"""The GPU's compute buffer: llama.cpp's CUDA graph allocator replayed (app/advisor/compute_buffer.py).

Held to 3% of what llama.cpp allocated on the H200 (docs/bench/memory-vs-llama-h200.txt: every
family at real widths with two layers, all on the GPU and experts in RAM) and, at each family's
real size, over placements, contexts, ubatches, attention and cache types, of what llama.cpp
allocates on the CUDA stand-in (bench/cuda_sim: tests/data/cuda_compute_stand_in.csv), whose
buffers equal the H200's.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from app.advisor.compute_buffer import BestFitAllocator, cuda_compute_buffers, cuda_flash_attention
from app.advisor.memory import memory_by_device
from app.engine.placement import PlacementPlan
from app.gguf.info import GGUFModel, read_model
from app.synthetic import SyntheticSpec
from app.synthetic.writer import write_synthetic_header

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "docs" / "bench" / "memory-vs-llama-h200.txt"
STAND_IN = ROOT / "tests" / "data" / "cuda_compute_stand_in.csv"
MiB = 2**20


def h200_rows() -> list[tuple[str, str, str, float]]:
    """(shape, placement, device, MiB) of each compute buffer the H200 measured."""
    rows = []
    for line in H200.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 6 and cells[4] == "compute":
            rows.append((cells[1], cells[2], cells[3], float(cells[5])))
    return rows


def shape_spec(text: str) -> SyntheticSpec:
    """bench/memory_vs_llama.py's shapes: PRESET:LAYERS:EXPERTS, the dense layers one, a
    vocabulary of 8192."""
    preset, layers, experts = text.split(":")
    base = SyntheticSpec.preset(preset)
    groups = {}
    if base.n_expert_groups > 1:
        groups = {"n_expert_groups": min(base.n_expert_groups, int(experts) // 2),
                  "n_group_used": min(base.n_group_used, int(experts) // 4 or 1)}
    return SyntheticSpec.preset(preset, n_layer=int(layers), n_expert=int(experts),
                                n_dense_lead=min(base.n_dense_lead, 1), n_vocab=8192, **groups)


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 (a loader of GGUFModels)
    """A model's header only (a sparse file: llama.cpp's buffers depend on nothing else)."""
    folder = tmp_path_factory.mktemp("headers")
    cache: dict[str, GGUFModel] = {}

    def load(name: str, spec: SyntheticSpec) -> GGUFModel:
        if name not in cache:
            cache[name] = read_model(write_synthetic_header(folder / f"{name.replace(':', '_')}.gguf", spec))
        return cache[name]
    return load


@pytest.mark.parametrize("shape, placement, device, measured", h200_rows(),
                         ids=[f"{r[0]}-{r[1]}-{r[2]}" for r in h200_rows()])
def test_the_compute_buffers_are_what_llama_cpp_allocated_on_the_h200(header, shape: str, placement: str,
                                                                       device: str, measured: float) -> None:
    model = header(shape, shape_spec(shape))
    plan = PlacementPlan(n_ctx=4096, split_mode="none", use_mmap=False,
                         experts_in_ram="all" if placement == "experts-ram" else "none")
    modelled = next(m.compute for m in memory_by_device(model, plan, ["CUDA0"]) if m.device == device)
    assert modelled / MiB == pytest.approx(measured, rel=0.03)


def stand_in_rows() -> list[dict[str, str]]:
    with STAND_IN.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", stand_in_rows(), ids=[f"{r['preset']}-{r['plan']}" for r in stand_in_rows()])
def test_the_compute_buffers_are_llama_cpp_s_at_real_sizes(header, row: dict[str, str]) -> None:
    model = header(row["preset"], SyntheticSpec.preset(row["preset"]))
    plan = dataclasses.replace(PlacementPlan(split_mode="none", use_mmap=False), **json.loads(row["plan"]))
    cpu, gpu = memory_by_device(model, plan, ["CUDA0"])[:2]
    assert gpu.compute == pytest.approx(int(row["gpu"]), rel=0.03)
    assert cpu.compute == pytest.approx(int(row["host"]), rel=0.03)


def test_a_tensor_takes_the_smallest_hole_it_fits_else_the_end() -> None:
    # ggml-alloc.c: best fit among the free blocks before the open end; freed bytes merge
    allocator = BestFitAllocator(alignment=128)
    a, b, c = allocator.alloc(1000), allocator.alloc(3000), allocator.alloc(500)
    assert (a, b, c) == (0, 1024, 4096)
    allocator.free(a, 1000)  # a 1024-byte hole, then one of 3072 after freeing b
    allocator.free(b, 3000)  # merges with a's: one hole of 4096
    assert allocator.alloc(100) == 0  # the hole, not the end
    assert allocator.alloc(5000) == 4608  # fits no hole: the end, past c
    assert allocator.peak == 4608 + 5120


def test_flash_attention_is_on_only_for_heads_cuda_has_kernels_for(header) -> None:
    assert cuda_flash_attention(header("qwen3-30b-a3b:2:8", shape_spec("qwen3-30b-a3b:2:8")))  # 128
    assert cuda_flash_attention(header("deepseek-v3:2:16", shape_spec("deepseek-v3:2:16")))  # MLA 576/512
    tiny = header("tiny", SyntheticSpec.preset("tiny"))  # 32-wide heads: llama.cpp's "auto" turns it off
    assert not cuda_flash_attention(tiny)


def test_graphs_llama_cpp_builds_otherwise_are_estimated(header) -> None:
    model = header("qwen3-235b-a22b", SyntheticSpec.preset("qwen3-235b-a22b", n_layer=20))
    in_ram = PlacementPlan(n_ctx=12288, experts_in_ram=14)
    # hot experts in VRAM split only ubatches under 32 tokens: the prompt's keeps llama.cpp's graph
    cached = dataclasses.replace(in_ram, expert_cache="static", expert_cache_slots=4)
    assert cuda_compute_buffers(model, cached) == cuda_compute_buffers(model, in_ram)
    # without op offload the CPU computes the experts in RAM: not recorded. The GPU holds what
    # it would with everything on it, the CPU a CPU-only run's activations (on the stand-in:
    # 0.404 and 0.164 GB)
    plan = dataclasses.replace(in_ram, op_offload=False)
    assert cuda_compute_buffers(model, plan) is None
    cpu, gpu = memory_by_device(model, plan, ["CUDA0"])[:2]
    assert gpu.compute == pytest.approx(0.404e9, rel=0.03)
    assert cpu.compute == pytest.approx(0.164e9, rel=0.10)
