"""Routed experts streamed from the SSD (engine patch 0005), through the real engine.

The stream's RAM cache is small here, so most tokens read experts from the model file with the
engine's own parallel reads; the greedy answer must be the one llama.cpp gives reading the
mapped file, and the engine's counters must say what was read. The speed against page faults
with the model larger than memory is bench/ssd_stream.py's (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import cli_load
from app.engine import expert_stream, ggml_backend
from app.engine.client import EngineClient
from app.engine.expert_cache import HOST_PACKS_ENV
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.errors import EngineError
from app.gguf.info import read_model

PROMPT = "Tell me about the experts of this model, one by one, with their habits"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineClient]:
    home = tmp_path_factory.mktemp("home")  # remembered routing profiles start empty
    with EngineClient.spawn(env={HOST_PACKS_ENV: "1", "MOEDESK_HOME": str(home)}) as client:
        yield client


def load(engine: EngineClient, model: Path, **stream: object) -> LoadResult:
    plan = PlacementPlan(n_ctx=512, repack=False, n_threads=2, **stream)  # type: ignore[arg-type]
    return engine.load(LoadParams(model=str(model), placement=plan))


def answer(engine: EngineClient, tokens: int = 24) -> str:
    stream = engine.chat(ChatParams(messages=[ChatMessage(role="user", content=PROMPT)],
                                    sampling=Sampling(temperature=0.0, max_tokens=tokens,
                                                      ignore_eos=True)))
    return "".join(token.text for token in stream)


def cache_bytes(model: Path, slots: int) -> int:
    return expert_stream.cache_bytes(read_model(model), slots)


def test_the_engine_build_has_the_streaming_patch() -> None:
    assert ggml_backend.has_stream_patch()


def test_a_small_ram_cache_reads_experts_from_the_file_and_the_answer_stays_the_same(
        engine: EngineClient, realistic_moe_gguf: Path) -> None:
    info = read_model(realistic_moe_gguf)
    load(engine, realistic_moe_gguf)
    plain = answer(engine)

    loaded = load(engine, realistic_moe_gguf, expert_stream="cache",
                  expert_stream_bytes=cache_bytes(realistic_moe_gguf, 16))
    stream = loaded.expert_stream
    assert stream is not None and stream.available, stream
    assert stream.slots == 16 and stream.layers == info.moe_layers and stream.bytes > 0
    assert answer(engine) == plain

    storage = engine.stats().storage
    assert storage is not None
    # 16 of 128 experts a layer: most tokens miss some, and the misses are read from the file
    assert storage.ram_hit_rate is not None and 0.05 < storage.ram_hit_rate < 0.95
    assert storage.stream_read_bps is not None and storage.stream_read_bps > 0
    assert storage.total_tokens >= 20


def test_advise_mode_gives_the_same_answer(engine: EngineClient, realistic_moe_gguf: Path) -> None:
    load(engine, realistic_moe_gguf)
    plain = answer(engine, 12)
    loaded = load(engine, realistic_moe_gguf, expert_stream="advise")
    assert loaded.expert_stream is not None and loaded.expert_stream.available
    assert answer(engine, 12) == plain


def test_vram_then_ram_then_ssd_gives_the_same_answer(engine: EngineClient,
                                                      realistic_moe_gguf: Path) -> None:
    # the hot-expert cache's packs in RAM (the test switch) in front of the stream's RAM cache:
    # the split layer's CPU part reads its cold experts through the stream
    load(engine, realistic_moe_gguf, experts_in_ram="all")
    plain = answer(engine, 16)
    loaded = load(engine, realistic_moe_gguf, experts_in_ram="all", expert_cache="static",
                  expert_cache_slots=16, expert_stream="cache",
                  expert_stream_bytes=cache_bytes(realistic_moe_gguf, 16))
    assert loaded.expert_cache is not None and loaded.expert_cache.available
    assert loaded.expert_stream is not None and loaded.expert_stream.available
    assert answer(engine, 16) == plain
    storage = engine.stats().storage
    assert storage is not None and storage.ram_hit_rate is not None


def test_a_cache_smaller_than_one_token_is_refused_with_the_size_that_would_do(
        engine: EngineClient, realistic_moe_gguf: Path) -> None:
    loaded = load(engine, realistic_moe_gguf, expert_stream="cache",
                  expert_stream_bytes=cache_bytes(realistic_moe_gguf, 2))
    stream = loaded.expert_stream
    assert stream is not None and not stream.available
    assert "fewer than one token's 8 experts" in stream.reason and "at least" in stream.reason
    assert answer(engine, 4)  # the model runs as before, from the mapped file


def test_streaming_without_mmap_or_beyond_memory_is_refused(engine: EngineClient,
                                                            realistic_moe_gguf: Path) -> None:
    with pytest.raises(EngineError, match="needs the model file mapped"):
        load(engine, realistic_moe_gguf, expert_stream="cache", use_mmap=False,
             expert_stream_bytes=1 << 30)
    with pytest.raises(EngineError, match="RAM expert cache") as caught:
        load(engine, realistic_moe_gguf, expert_stream="cache", expert_stream_bytes=1 << 50)
    assert "Give the expert cache at most" in caught.value.hint


def test_storage_counts_decode_reads_per_token(engine: EngineClient, realistic_moe_gguf: Path) -> None:
    load(engine, realistic_moe_gguf)
    answer(engine, 8)
    storage = engine.stats().storage
    assert storage is not None
    assert storage.total_tokens >= 6 and storage.bytes_per_token >= 0
    assert storage.ram_hit_rate is None  # no stream: page faults only


def test_cli_expert_stream_flags() -> None:
    parser = argparse.ArgumentParser()
    cli_load.add_placement_args(parser)
    args = parser.parse_args(["--expert-stream", "cache", "--expert-stream-size", "6GiB",
                              "--expert-stream-threads", "8"])
    given = cli_load.given_settings(args)
    assert given["expert_stream"] == "cache"
    assert given["expert_stream_bytes"] == 6 * 2**30
    assert given["expert_stream_threads"] == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["--expert-stream-size", "lots"])


def test_experts_of_a_split_model_are_read_from_their_own_shards(engine: EngineClient,
                                                                 split_moe_gguf: list[Path]) -> None:
    first = split_moe_gguf[0]
    load(engine, first)
    plain = answer(engine, 12)
    # tiny: 8 experts a layer, 2 active; a cache of 3 keeps reading from the shards
    loaded = load(engine, first, expert_stream="cache", expert_stream_bytes=cache_bytes(first, 3))
    assert loaded.expert_stream is not None and loaded.expert_stream.available, loaded.expert_stream
    assert loaded.expert_stream.slots == 3
    assert answer(engine, 12) == plain
    storage = engine.stats().storage
    assert storage is not None and storage.stream_read_bps is not None
