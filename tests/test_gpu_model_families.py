"""Every model family with every placement on a real GPU: all on the GPU, routed experts in RAM,
the first layers' experts in RAM, classic layer offload and no GPU at all; each one answers and
puts its routed experts where the plan says (tests/test_model_families.py covers the CPU).

Run on the accelerator machine: ``pytest -m gpu``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.client import EngineClient
from app.engine.placement import CPU_DEVICE, PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.synthetic import SyntheticSpec, write_synthetic_model

pytestmark = pytest.mark.gpu

FAMILIES = ["tiny-deepseek-v3", "tiny-kimi-k2", "tiny-glm-4.5", "tiny-gpt-oss"]
# name -> the plan's fields
PLACEMENTS: dict[str, dict[str, object]] = {
    "all-on-gpu": {"n_gpu_layers": -1},
    "experts-in-ram": {"n_gpu_layers": -1, "experts_in_ram": "all"},
    "first-3-layers-experts-in-ram": {"n_gpu_layers": -1, "experts_in_ram": 3},
    "classic-offload-2-layers": {"n_gpu_layers": 2},
    "no-gpu": {"n_gpu_layers": 0, "op_offload": False},
}


@pytest.fixture(scope="module")
def family_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gpu_families")
    return {name: write_synthetic_model(folder / f"{name}.gguf", SyntheticSpec.preset(name))[0]
            for name in FAMILIES}


def expert_layers_in_ram(spec: SyntheticSpec, placement: str) -> list[int]:
    moe = list(range(spec.n_dense_lead, spec.n_layer))
    if placement in ("experts-in-ram", "no-gpu"):
        return moe
    if placement == "first-3-layers-experts-in-ram":
        return [il for il in moe if il < 3]
    if placement == "classic-offload-2-layers":  # the last layer and the output on the GPU
        return [il for il in moe if il < spec.n_layer_all + 1 - 2]
    return []


def routed_bytes_in_ram(result: LoadResult) -> int:
    return sum(p.bytes for p in result.placement
               if p.tensor_class == "routed_experts" and p.device == CPU_DEVICE)


@pytest.mark.parametrize("placement", list(PLACEMENTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_runs_with_each_placement(
        engine: EngineClient, family_files: dict[str, Path], family: str, placement: str) -> None:
    spec = SyntheticSpec.preset(family)
    plan = PlacementPlan(**{"n_ctx": 1024, "split_mode": "none", **PLACEMENTS[placement]})  # type: ignore[arg-type]
    result = engine.load(LoadParams(model=str(family_files[family]), placement=plan))
    in_ram = set(expert_layers_in_ram(spec, placement))
    moe = set(range(spec.n_dense_lead, spec.n_layer))
    assert set(result.expert_layers_on_gpu) == moe - in_ram
    assert (routed_bytes_in_ram(result) > 0) == bool(in_ram)
    stream = engine.chat(ChatParams(
        messages=[ChatMessage(role="user", content="Route me through the experts")],
        sampling=Sampling(temperature=0.0, max_tokens=12, ignore_eos=True)))
    text = "".join(token.text for token in stream)
    assert stream.result.completion_tokens == 12 and text == stream.result.text
    routing = engine.routing()
    assert routing.layers == sorted(moe)
    # the hit rate: the share of routed-expert uses served from VRAM
    assert (routing.hit_rate == 0.0) == (not moe - in_ram)
