"""Splitting a model over several GPUs (needs a machine with two or more; elsewhere skipped,
and deselected entirely without a GPU build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.engine.synthetic import SyntheticSpec, write_synthetic_model

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


def test_a_layer_split_spreads_layers_over_both_gpus_by_tensor_split(
        engine: EngineClient, gpus: list[str], model_8_layers: Path) -> None:
    even = load(engine, model_8_layers, split_mode="layer", tensor_split=[1.0, 1.0])
    a, b = bytes_on(even, gpus[0], "routed_experts"), bytes_on(even, gpus[1], "routed_experts")
    assert a == b > 0  # 4 layers' experts each
    skewed = load(engine, model_8_layers, split_mode="layer", tensor_split=[3.0, 1.0])
    assert bytes_on(skewed, gpus[0], "routed_experts") == 3 * bytes_on(skewed, gpus[1], "routed_experts")


def test_split_mode_none_keeps_everything_on_the_main_gpu(
        engine: EngineClient, gpus: list[str], model_8_layers: Path) -> None:
    result = load(engine, model_8_layers, split_mode="none", main_gpu=1)
    assert bytes_on(result, gpus[0]) == 0 and bytes_on(result, gpus[1]) > 0


def test_experts_in_ram_with_the_rest_split_over_two_gpus(
        engine: EngineClient, gpus: list[str], model_8_layers: Path) -> None:
    result = load(engine, model_8_layers, split_mode="layer", tensor_split=[1.0, 1.0], experts_in_ram="all")
    assert bytes_on(result, gpus[0], "routed_experts") == bytes_on(result, gpus[1], "routed_experts") == 0
    assert bytes_on(result, gpus[0], "attention") > 0 and bytes_on(result, gpus[1], "attention") > 0
