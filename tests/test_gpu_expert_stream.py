"""Experts from the SSD with a GPU (engine patch 0005): the experts in RAM stay in the mapped
file (the stream reads them from it), the answer is the one without the stream, and with hot
experts in VRAM (patch 0004) on the same layers the split layer's RAM part reads its cold
experts through the stream's RAM cache: VRAM, then RAM, then SSD.

Run on the accelerator machine: ``pytest -m gpu``. tests/test_expert_stream.py checks the stream
on a CPU; bench/ssd_stream.py measures its speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.client import EngineClient
from app.engine.expert_cache import expert_bytes
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.engine.synthetic import SyntheticSpec, write_synthetic_model
from app.gguf_info import read_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def realistic_q30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen3-30B-A3B's real layer shapes, 4 layers, routing like Qwen3's (about 2.2 GB)."""
    folder = tmp_path_factory.mktemp("q30s")
    (path,) = write_synthetic_model(folder / "q30-4l-realistic.gguf",
                                    SyntheticSpec.preset("qwen3-30b-a3b", n_layer=4, routing="realistic"))
    return path


def load(engine: EngineClient, model: Path, **plan: object) -> LoadResult:
    placement = PlacementPlan(**{"n_ctx": 1024, "split_mode": "none", "experts_in_ram": "all", **plan})  # type: ignore[arg-type]
    return engine.load(LoadParams(model=str(model), placement=placement))


def decode(engine: EngineClient, tokens: int = 32) -> str:
    stream = engine.chat(ChatParams(
        messages=[ChatMessage(role="user", content="Route me through the experts")],
        sampling=Sampling(temperature=0.0, max_tokens=tokens, ignore_eos=True)))
    return "".join(token.text for token in stream)


def ram_cache(model: Path, slots: int) -> int:
    info = read_model(model)
    return slots * max(expert_bytes(info, il) for il in info.moe_layers) * len(info.moe_layers)


def test_with_a_gpu_streamed_experts_stay_in_the_mapped_file(engine: EngineClient,
                                                              realistic_q30: Path) -> None:
    load(engine, realistic_q30)
    reference = decode(engine)
    loaded = load(engine, realistic_q30, expert_stream="cache",
                  expert_stream_bytes=ram_cache(realistic_q30, 32))
    stream = loaded.expert_stream
    assert stream is not None and stream.available, stream
    assert decode(engine) == reference  # the CPU computes the RAM experts either way
    storage = engine.stats().storage
    assert storage is not None and storage.ram_hit_rate is not None and storage.ram_hit_rate < 1


def test_vram_then_ram_then_ssd(engine: EngineClient, realistic_q30: Path) -> None:
    loaded = load(engine, realistic_q30, expert_cache="static", expert_cache_slots=32,
                  expert_stream="cache", expert_stream_bytes=ram_cache(realistic_q30, 16))
    assert loaded.expert_cache is not None and loaded.expert_cache.available, loaded.expert_cache
    assert loaded.expert_stream is not None and loaded.expert_stream.available, loaded.expert_stream
    assert decode(engine, 48)
    routing = engine.routing()
    assert routing.hit_rate is not None and routing.hit_rate > 0.35  # served from VRAM
    storage = engine.stats().storage
    # the cold selections went through the RAM cache, some read from the file
    assert storage is not None and storage.ram_hit_rate is not None and 0 < storage.ram_hit_rate < 1
