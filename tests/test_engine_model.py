"""Loading models in the real engine process: placement report, split models, bad input.

Each bad input gets its own error type with a message naming the cause, and the engine stays
up: the same engine then loads a good model.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import llama_cpp
import psutil
import pytest
from gguf import GGUFReader

from app.engine import ggml_backend
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan, TensorOverride
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, Progress, Sampling
from app.engine.runtime import device_of_buffer_type
from app.errors import (
    EngineError,
    MissingShardError,
    ModelFileError,
    OutOfMemoryError,
    PlacementError,
    UnsupportedArchitectureError,
)
from app.gguf.info import read_model
from app.synthetic import (
    SyntheticSpec,
    tensor_plan,
    write_synthetic_header,
    write_synthetic_model,
)


def load(engine: EngineClient, model: Path | str, **plan: object) -> object:
    placement = PlacementPlan(**{"n_ctx": 512, "n_threads": 2, **plan})  # type: ignore[arg-type]
    return engine.load(LoadParams(model=str(model), placement=placement))


def assert_still_serves(engine: EngineClient, good_model: Path) -> None:
    result = load(engine, good_model)
    assert result.model.architecture == "qwen3moe"  # type: ignore[attr-defined]


def test_load_reports_model_progress_and_where_every_byte_landed(
        engine: EngineClient, tiny_moe_gguf: Path) -> None:
    progress: list[Progress] = []
    result = engine.load(LoadParams(model=str(tiny_moe_gguf),
                                    placement=PlacementPlan(n_ctx=512, experts_in_ram="all")),
                         on_progress=progress.append)
    model = result.model
    assert (model.architecture, model.n_layer, model.n_expert, model.n_expert_used) == (
        "qwen3moe", 4, 8, 2)
    assert model.chat_template and result.n_ctx == 512 and result.telemetry
    assert progress and progress[-1].fraction == 1.0
    assert [p.fraction for p in progress] == sorted(p.fraction for p in progress)

    # every tensor of the file is accounted for, by class, on the CPU of this machine
    reader = GGUFReader(tiny_moe_gguf)
    assert sum(p.bytes for p in result.placement) == sum(int(t.n_bytes) for t in reader.tensors)
    assert sum(p.tensors for p in result.placement) == len(reader.tensors)
    classes = {p.tensor_class for p in result.placement}
    assert {"routed_experts", "attention", "router", "embeddings", "norms"} <= classes
    assert {p.device for p in result.placement} == {"CPU"}
    assert result.expert_layers_on_gpu == []


def test_weights_repacked_for_the_cpu_count_as_cpu_memory() -> None:
    # On CPUs with AMX, llama.cpp puts weights in a buffer type named just "AMX"
    build = llama_cpp.llama_print_system_info().decode()
    repacked = ggml_backend.host_buffer_types()
    assert ("CPU_REPACK" in repacked) == ("REPACK = 1" in build)
    assert ("AMX" in repacked) == ("AMX_INT8 = 1" in build)
    for buft in repacked | {"CPU", "CPU_Mapped"}:
        assert device_of_buffer_type(buft, {"CPU"}) == "CPU"
    assert device_of_buffer_type("CUDA0", {"CPU", "CUDA0"}) == "CUDA0"


def test_split_model_loads_from_its_first_shard(engine: EngineClient,
                                                split_moe_gguf: list[Path]) -> None:
    result = load(engine, split_moe_gguf[0])
    assert result.model.shards == [str(p) for p in split_moe_gguf]  # type: ignore[attr-defined]
    assert result.model.n_layer == 4  # type: ignore[attr-defined]


def test_split_model_with_a_missing_shard_names_it(engine: EngineClient, tmp_path: Path,
                                                   split_moe_gguf: list[Path],
                                                   tiny_moe_gguf: Path) -> None:
    for shard in split_moe_gguf:
        shutil.copy(shard, tmp_path / shard.name)
    missing = tmp_path / split_moe_gguf[1].name
    missing.unlink()
    with pytest.raises(MissingShardError) as err:
        load(engine, tmp_path / split_moe_gguf[0].name)
    assert missing.name in str(err.value) and "1 of 3" in str(err.value)
    assert_still_serves(engine, tiny_moe_gguf)


def test_a_file_that_is_not_gguf_is_refused(engine: EngineClient, tmp_path: Path,
                                           tiny_moe_gguf: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 Not Found</html>")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        load(engine, fake)
    with pytest.raises(ModelFileError, match="does not exist"):
        load(engine, tmp_path / "nowhere.gguf")
    assert_still_serves(engine, tiny_moe_gguf)


def test_a_truncated_file_is_refused(engine: EngineClient, tmp_path: Path,
                                     tiny_moe_gguf: Path) -> None:
    cut = tmp_path / "cut.gguf"
    data = tiny_moe_gguf.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelFileError, match="truncated|damaged") as err:
        load(engine, cut)
    assert "download" in err.value.hint
    assert_still_serves(engine, tiny_moe_gguf)


def test_an_unknown_architecture_is_named(engine: EngineClient, tmp_path: Path,
                                          tiny_moe_gguf: Path) -> None:
    # rename the architecture in the header (its value and every "qwen3moe." key prefix)
    header_end = GGUFReader(tiny_moe_gguf).data_offset
    data = tiny_moe_gguf.read_bytes()
    renamed = tmp_path / "future.gguf"
    renamed.write_bytes(data[:header_end].replace(b"qwen3moe", b"qwen9moe") + data[header_end:])
    with pytest.raises(UnsupportedArchitectureError, match="qwen9moe"):
        load(engine, renamed)
    assert_still_serves(engine, tiny_moe_gguf)


def test_a_context_that_cannot_fit_is_refused_before_allocating(engine: EngineClient,
                                                                tiny_moe_gguf: Path) -> None:
    with pytest.raises(OutOfMemoryError) as err:
        load(engine, tiny_moe_gguf, n_ctx=2**31 - 1)
    assert "KV cache" in str(err.value) and "context" in err.value.hint
    assert_still_serves(engine, tiny_moe_gguf)


def test_weights_larger_than_ram_load_only_if_they_can_stream_from_the_ssd(
        engine: EngineClient, tmp_path: Path, tiny_moe_gguf: Path) -> None:
    # the 235B shape in Q8_0 with enough layers to outgrow this machine's RAM and swap, header
    # only (the weights a sparse hole: the refusal comes before llama.cpp reads any)
    capacity = psutil.virtual_memory().total + psutil.swap_memory().total
    spec = SyntheticSpec.preset("qwen3-235b-a22b", quant="Q8_0")

    def size(n_layer: int) -> int:
        return sum(t.nbytes for t in tensor_plan(dataclasses.replace(spec, n_layer=n_layer)))

    per_layer = size(2) - size(1)
    big = write_synthetic_header(tmp_path / "big.gguf",
                                 dataclasses.replace(spec, n_layer=capacity // per_layer + 1))
    assert read_model(big).size_bytes > capacity
    with pytest.raises(OutOfMemoryError) as err:
        load(engine, big)  # the CPU build repacks every weight into RAM
    assert "repacked" in str(err.value) and "--no-repack" in err.value.hint
    with pytest.raises(OutOfMemoryError, match="mmap is off"):
        load(engine, big, repack=False, use_mmap=False)
    # mapped and not repacked it loads, and nothing of it is read yet: llama.cpp would prefetch
    # the whole file through the page cache (MAP_POPULATE) if patch 0003 did not stop it for
    # files larger than the memory available
    load(engine, big, repack=False, n_ctx=512)
    assert psutil.Process(engine.pid).memory_info().rss < 2 * 2**30
    assert_still_serves(engine, tiny_moe_gguf)


def test_placement_on_a_device_the_build_lacks_is_refused(engine: EngineClient,
                                                          tiny_moe_gguf: Path) -> None:
    rules = [TensorOverride(pattern=r"ffn_.*_exps", device="NoSuchGPU0")]
    with pytest.raises(PlacementError, match="NoSuchGPU0"):
        load(engine, tiny_moe_gguf, overrides=rules)
    with pytest.raises(PlacementError, match="regex"):
        load(engine, tiny_moe_gguf, overrides=[TensorOverride(pattern="blk.(1", device="CPU")])
    assert_still_serves(engine, tiny_moe_gguf)


def with_template_edit(source: Path, target: Path, old: bytes, new: bytes) -> Path:
    """A copy of ``source`` whose chat template has ``old`` replaced by ``new`` (same length)."""
    assert len(old) == len(new)
    header_end = GGUFReader(source).data_offset
    data = source.read_bytes()
    assert data[:header_end].count(old) == 1
    target.write_bytes(data[:header_end].replace(old, new) + data[header_end:])
    return target


def test_a_chat_template_that_does_not_parse_is_refused_at_load(
        engine: EngineClient, tmp_path: Path, tiny_moe_gguf: Path) -> None:
    broken = with_template_edit(tiny_moe_gguf, tmp_path / "broken.gguf",
                                b"{%- if add_generation_prompt %}", b"{%- if add_generation_prompt %%")
    with pytest.raises(ModelFileError, match="chat template does not parse"):
        load(engine, broken)
    assert_still_serves(engine, tiny_moe_gguf)


def test_a_chat_template_that_refuses_a_chat_says_so_and_the_engine_serves_on(
        engine: EngineClient, tmp_path: Path, tiny_moe_gguf: Path) -> None:
    strict = with_template_edit(tiny_moe_gguf, tmp_path / "strict.gguf",
                                b"{%- if add_generation_prompt %}", b"{%- if raise_exception('no') %}")
    load(engine, strict)
    stream = engine.chat(ChatParams(messages=[ChatMessage(role="user", content="hi")]))
    with pytest.raises(EngineError, match="chat template refused this chat: no") as err:
        stream.result  # noqa: B018 - the terminal event carries the error
    assert "template" in err.value.hint
    assert_still_serves(engine, tiny_moe_gguf)


def test_load_reports_what_llama_cpp_allocated(engine: EngineClient, tiny_moe_gguf: Path) -> None:
    result = load(engine, tiny_moe_gguf)  # n_ctx 512, f16 cache
    by_kind: dict[str, int] = {}
    for allocation in result.allocations:  # type: ignore[attr-defined]
        assert allocation.device == "CPU"
        by_kind[allocation.kind] = by_kind.get(allocation.kind, 0) + allocation.bytes
    # K and V: 512 cells x 4 layers x 2 KV heads x (32 + 32) head dims x 2 bytes
    assert by_kind["kv_cache"] == 512 * 4 * 2 * (32 + 32) * 2
    weights = sum(int(t.n_bytes) for t in GGUFReader(tiny_moe_gguf).tensors)
    assert by_kind["weights"] >= weights * 0.99  # mapped file, plus repacked copies
    assert by_kind["compute"] > 0


def test_no_repack_keeps_every_weight_in_the_mapped_file(engine: EngineClient,
                                                        tiny_moe_gguf: Path) -> None:
    def weight_buffers(**plan: object) -> set[str]:
        result = load(engine, tiny_moe_gguf, **plan)
        return {a.buffer_type for a in result.allocations  # type: ignore[attr-defined]
                if a.kind == "weights"}

    # an x86 CPU with AVX2 (or an ARM one with NEON) gets its Q4_0 experts repacked
    assert "CPU_REPACK" in weight_buffers()
    assert weight_buffers(repack=False) == {"CPU_Mapped"}
    stream = engine.chat(ChatParams(messages=[ChatMessage(role="user", content="hi")],
                                    sampling=Sampling(max_tokens=4, ignore_eos=True)))
    assert stream.result.completion_tokens == 4


def test_allocations_are_reported_for_a_model_with_many_layers(engine: EngineClient,
                                                               tmp_path: Path) -> None:
    # llama.cpp logs a DEBUG line per tensor; they must not push the buffer sizes out
    (deep,) = write_synthetic_model(tmp_path / "deep.gguf", SyntheticSpec.preset("tiny", n_layer=24))
    result = load(engine, deep)
    kinds = {a.kind for a in result.allocations}  # type: ignore[attr-defined]
    assert {"weights", "kv_cache", "compute"} <= kinds
