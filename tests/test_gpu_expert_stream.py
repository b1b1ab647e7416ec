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
from app.engine.expert_stream import cache_bytes
from app.gguf.info import read_model
from tests import gpu_testing
from tests.gpu_testing import decode, load

pytestmark = pytest.mark.gpu


realistic_q30 = gpu_testing.realistic_q30  # the fixture, where pytest looks for it


def ram_cache(model: Path, slots: int) -> int:
    return cache_bytes(read_model(model), slots)


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
