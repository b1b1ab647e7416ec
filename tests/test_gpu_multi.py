"""Splitting a model over several GPUs (needs a machine with two or more; elsewhere skipped,
and deselected entirely without a GPU build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.advisor.memory import layer_devices
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.gguf.info import read_model
from app.synthetic import SyntheticSpec, write_synthetic_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpus(engine: EngineClient) -> list[str]:
    names = [d.name for d in engine.info().devices if d.kind == "gpu"]
    if len(names) < 2:
        pytest.skip(f"needs two GPUs; this machine has {len(names)}")
    return names


@pytest.fixture(scope="module")
def model_8_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("q30-8l")
    (path,) = write_synthetic_model(folder / "q30-8l.gguf", SyntheticSpec.preset("qwen3-30b-a3b", n_layer=8))
    return path


def load(engine: EngineClient, model: Path, **plan: object) -> LoadResult:
    result = engine.load(LoadParams(model=str(model), placement=PlacementPlan(n_ctx=1024, **plan)))
    stream = engine.chat(ChatParams(messages=[ChatMessage("user", "split me")],
                                    sampling=Sampling(temperature=0.0, max_tokens=8, ignore_eos=True)))
    assert stream.result.completion_tokens == 8
    return result


def bytes_on(result: LoadResult, device: str, tensor_class: str | None = None) -> int:
    return sum(p.bytes for p in result.placement
               if p.device == device and (tensor_class is None or p.tensor_class == tensor_class))


@pytest.mark.parametrize("tensor_split", [[1.0, 1.0], [3.0, 1.0]])
def test_a_layer_split_spreads_layers_over_the_gpus_as_the_memory_model_says(
        engine: EngineClient, gpus: list[str], model_8_layers: Path, tensor_split: list[float]) -> None:
    plan = PlacementPlan(n_ctx=1024, split_mode="layer", tensor_split=tensor_split)
    result = load(engine, model_8_layers, split_mode="layer", tensor_split=tensor_split)
    # llama.cpp counts the output layer among the n_layer + 1 it splits: [1, 1] puts layers 0-4
    # on the first GPU and 5-7 with the output on the second; the advisor must agree
    devices = layer_devices(plan, 8, gpus[:2])[:8]
    per_layer = read_model(model_8_layers).bytes_by_class()["routed_experts"] // 8
    for gpu in gpus[:2]:
        assert bytes_on(result, gpu, "routed_experts") == devices.count(gpu) * per_layer, gpu
    assert devices.count(gpus[0]) > 0 and devices.count(gpus[1]) > 0


def test_split_mode_none_keeps_everything_on_the_main_gpu(
        engine: EngineClient, gpus: list[str], model_8_layers: Path) -> None:
    result = load(engine, model_8_layers, split_mode="none", main_gpu=1)
    assert bytes_on(result, gpus[0]) == 0 and bytes_on(result, gpus[1]) > 0


def test_experts_in_ram_with_the_rest_split_over_two_gpus(
        engine: EngineClient, gpus: list[str], model_8_layers: Path) -> None:
    result = load(engine, model_8_layers, split_mode="layer", tensor_split=[1.0, 1.0], experts_in_ram="all")
    assert bytes_on(result, gpus[0], "routed_experts") == bytes_on(result, gpus[1], "routed_experts") == 0
    assert bytes_on(result, gpus[0], "attention") > 0 and bytes_on(result, gpus[1], "attention") > 0
