"""Hostile and broken model files: every reader (the advisor, the library, the Hub path, the
engine) refuses them with a ModelFileError naming the file and the field, before anything is
sized from them; what it accepts, llama.cpp can load without aborting.

Hypothesis writes the hostile headers (tests/gguf_bytes.py writes the format byte by byte);
the files of issue 18 are also here by name, as a user met them.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.advisor.planner import plan_for
from app.advisor.report import plan_lines
from app.errors import ModelFileError
from app.gguf.header import read_header_file
from app.gguf.info import GGUFModel, read_model
from app.gguf.validate import INTEGER_KEYS
from app.hardware.bandwidth import RamBandwidth
from app.hardware.model import Cpu, Gpu, Hardware, Memory
from app.hub.library import Library
from tests import gguf_bytes as gb
from tests import hub_server
from tests.gguf_bytes import Header, Tensor, moe_header

local_hub = hub_server.local_hub  # the fixture, where pytest looks for it

GiB = 2**30
MACHINE = Hardware(cpu=Cpu("CPU", "x86_64", 8, 16, ()), memory=Memory(64 * GiB, 64 * GiB, 0),
                   numa_nodes=[], gpus=[Gpu("nvidia", "RTX", 24 * GiB, 24 * GiB)])
RAM = RamBandwidth(read_bw=80e9, read_bw_1=12e9, copy_bw_1=9e9, matmul_flops=1.5e12, threads=8,
                   buffer_bytes=1 << 28)
ARCH = "qwen3moe"


def llama_cpp_would_abort(model: GGUFModel) -> str | None:
    """The GGML_ASSERTs of llama_model_base::load_hparams (vendor/llama.cpp/src/llama-model.cpp),
    written out again as the oracle: a model the readers accept must pass every one."""
    meta = model.metadata
    n_layer = meta.get(f"{ARCH}.block_count")
    if n_layer is not None and not 0 < n_layer <= 512:  # type: ignore[operator]
        return "n_layer"
    n_expert = meta.get(f"{ARCH}.expert_count", 0)
    used = model.arrays.get(f"{ARCH}.expert_used_count") or [meta.get(f"{ARCH}.expert_used_count", 0)]
    used_max = max(used)  # type: ignore[type-var]
    groups = meta.get(f"{ARCH}.expert_group_count", 0)
    if not n_expert <= 1024 or not used_max <= n_expert:  # type: ignore[operator]
        return "n_expert"
    if n_expert > 0 and (used_max <= 0 or not groups < n_expert):  # type: ignore[operator]
        return "n_expert_used"
    if n_expert == 0 and (used_max != 0 or groups != 0):
        return "dense"
    return None


def refused_or_sound(path: Path) -> ModelFileError | GGUFModel:
    """The contract for one file: a clear refusal, or a model llama.cpp can take and the
    advisor plans (without sizing anything absurd)."""
    try:
        model = read_model(path)
    except ModelFileError as error:  # MissingShardError is one too
        # the file, or the shard of its split set at fault
        assert any(f.name in error.message for f in path.parent.iterdir()), error.message
        assert error.hint
        return error
    assert llama_cpp_would_abort(model) is None, model.metadata
    for tensor in model.tensors:
        block = {"Q4_0": 32, "Q8_0": 32, "Q4_K": 256}.get(tensor.type_name, 1)
        assert (tensor.shape[0] if tensor.shape else 1) % block == 0
    assert plan_lines(model, plan_for(model, MACHINE, 4096, ram=RAM))
    return model


# --- generated hostile headers ---------------------------------------------------------------

INTERESTING = [0, 1, 2, 3, 4, 8, 511, 512, 513, 1023, 1024, 1025, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
               2**63 - 1, 2**63, 2**64 - 1, -1, -(2**31), -(2**63)]


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[int, object]:
    """A GGUF value of any type, often a number at one of llama.cpp's edges."""
    kind = draw(st.sampled_from(["int", "int", "int", "float", "string", "bool", "array"]))
    if kind == "int":
        number = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(-(2**63), 2**64 - 1)))
        vtype = draw(st.sampled_from([t for t, (lo, hi) in gb.RANGES.items() if lo <= number <= hi]))
        return vtype, number
    if kind == "float":
        return draw(st.sampled_from([gb.FLOAT32, gb.FLOAT64])), draw(st.floats(width=32))
    if kind == "string":
        return gb.STRING, draw(st.text(max_size=12))
    if kind == "bool":
        return gb.BOOL, draw(st.booleans())
    items = draw(st.lists(st.sampled_from(INTERESTING[:14]), max_size=8))
    return gb.ARRAY, (gb.UINT32, items)


@given(changes=st.dictionaries(st.sampled_from(INTEGER_KEYS), typed_values(), min_size=1, max_size=4))
@example(changes={"block_count": (gb.UINT32, 2**31)})  # issue 18: "16.8 GB and rising"
@example(changes={"expert_count": (gb.UINT32, 0)})  # experts used, but none there
@example(changes={"expert_used_count": (gb.UINT32, 9)})  # more active than experts
@example(changes={"expert_used_count": (gb.UINT32, 0)})
@example(changes={"expert_count": (gb.UINT32, 1025), "expert_used_count": (gb.UINT32, 2)})
@example(changes={"expert_used_count": (gb.ARRAY, (gb.UINT32, [2, 5]))})  # per layer, one too many
@example(changes={"embedding_length": (gb.FLOAT32, float("nan"))})
def test_hyperparameters_are_refused_by_name_or_safe_to_plan(tmp_path_factory: pytest.TempPathFactory,
                                                            changes: dict[str, tuple[int, object]]) -> None:
    header = moe_header()
    for key, (vtype, item) in changes.items():
        header.set(f"{ARCH}.{key}", vtype, item)
    path = gb.write(tmp_path_factory.mktemp("hparams") / "hostile.gguf", header)
    outcome = refused_or_sound(path)
    if isinstance(outcome, ModelFileError):
        assert any(f"{ARCH}.{key}" in outcome.message for key in changes) or "tensor" in outcome.message


@st.composite
def tensor_tables(draw: st.DrawFn) -> list[Tensor]:
    """Tensors with hostile shapes, types and data offsets."""
    tensors = []
    for i in range(draw(st.integers(1, 4))):
        ggml = draw(st.sampled_from([gb.F32, gb.F16, gb.Q4_0, gb.Q8_0, gb.Q4_K]))
        huge = st.sampled_from([2**32, 2**62, 2**63, 2**64 - 1])
        dims = draw(st.lists(st.one_of(st.integers(0, 600), huge), max_size=6))
        offset = draw(st.one_of(st.none(), st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 31, 32])))
        layer = draw(st.sampled_from(["", "blk.0.", "blk.1.", "blk.7.", "blk.99999999999."]))
        tensors.append(Tensor(f"{layer}t{i}.weight", dims, ggml, offset))
    return tensors


@given(tensors=tensor_tables())
@example(tensors=[Tensor("blk.0.ffn_up_exps.weight", [33, 32, 4], gb.Q4_0)])  # issue 18: row of 33
@example(tensors=[Tensor("a.weight", [1, 1, 1, 1, 1])])  # five dimensions
@example(tensors=[Tensor("a.weight", [32], gb.F32), Tensor("b.weight", [32], gb.F32, offset=0)])
def test_tensor_tables_are_refused_by_name_or_safe_to_plan(tmp_path_factory: pytest.TempPathFactory,
                                                          tensors: list[Tensor]) -> None:
    header = moe_header()
    header.tensors = tensors
    try:
        data, end = gb.header_bytes(header)
    except struct.error:
        return  # a size the file format itself cannot carry (over 64 bits): nothing to read
    path = tmp_path_factory.mktemp("tensors") / "hostile.gguf"
    with open(path, "wb") as out:
        out.write(data)
        out.truncate(min(end, len(data) + (1 << 20)))  # a hole; an absurd end stays unwritten
    outcome = refused_or_sound(path)
    if isinstance(outcome, ModelFileError):
        assert "tensor" in outcome.message or "truncated" in outcome.message


@given(data=st.data())
@settings(max_examples=80)
def test_damaged_bytes_in_a_real_header_never_escape_as_anything_else(
        tiny_moe_gguf: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    with tiny_moe_gguf.open("rb") as fh:
        header = fh.read(read_header_file(fh).data_offset)
    size = tiny_moe_gguf.stat().st_size
    damaged = bytearray(header)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(header) - 1))
        damaged[at:at + 8] = data.draw(st.binary(min_size=1, max_size=8))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(header))))
    path = tmp_path_factory.mktemp("bytes") / "damaged.gguf"
    with open(path, "wb") as out:
        out.write(damaged[:cut])
        out.truncate(len(damaged[:cut]) if cut is not None else size)  # the tensor data: a hole
    refused_or_sound(path)


@given(depth=st.integers(2, 200_000))
@example(depth=1_000_000)  # issue 18: "metadata arrays nested very deep"
@settings(max_examples=15)
def test_arrays_of_arrays_are_refused_naming_the_key(tmp_path_factory: pytest.TempPathFactory,
                                                    depth: int) -> None:
    header = moe_header().set("moedesk.deep", gb.ARRAY, gb.nested_arrays(depth))
    path = gb.write(tmp_path_factory.mktemp("deep") / "deep.gguf", header)
    with pytest.raises(ModelFileError, match=r"deep\.gguf .*moedesk\.deep holds an array of arrays"):
        read_model(path)


def split_set(folder: Path, numbers: list[tuple[object, object, object]], arch: list[str]) -> Path:
    """Shards of the small model, each with the split keys given: (split.no, split.count,
    split.tensors.count); a later shard may come from another model (``arch``)."""
    base = moe_header()
    n = len(numbers)
    per = -(-len(base.tensors) // n)
    for i, (number, count, total) in enumerate(numbers):
        shard = moe_header(arch=arch[i]) if i == 0 else Header()
        shard.tensors = base.tensors[i * per:(i + 1) * per]
        for key, item in (("split.no", number), ("split.count", count), ("split.tensors.count", total)):
            if item is not None:
                shard.set(key, gb.UINT16 if key != "split.tensors.count" else gb.INT32, item)
        if i and arch[i] != ARCH:  # another model's shard: its own tensors, and their total
            shard.tensors = [Tensor(t.name.replace("blk.", "other."), t.shape, t.ggml) for t in shard.tensors]
            shard.set("split.tensors.count", gb.INT32, len(base.tensors) + 7)
        gb.write(folder / f"split-{i + 1:05d}-of-{n:05d}.gguf", shard)
    return folder / f"split-00001-of-{n:05d}.gguf"


@given(n=st.integers(2, 3), data=st.data())
@example(n=3, data=None)  # the consistent set: accepted
def test_split_sets_whose_shards_do_not_belong_together_are_refused(
        tmp_path_factory: pytest.TempPathFactory, n: int, data: st.DataObject | None) -> None:
    total = len(moe_header().tensors)
    good = [(i, n, total) for i in range(n)]
    numbers = good if data is None else [
        tuple(data.draw(st.one_of(st.just(g), st.none(), st.integers(0, 5), st.just(total + 1)))
              for g in shard) for shard in good]
    arch = [ARCH] * n if data is None else [ARCH] + [data.draw(st.sampled_from([ARCH, "llama"]))
                                                 for _ in range(n - 1)]
    first = split_set(tmp_path_factory.mktemp("split"), numbers, arch)  # type: ignore[arg-type]
    outcome = refused_or_sound(first)
    consistent = numbers == good and arch == [ARCH] * n
    assert isinstance(outcome, GGUFModel) == consistent, outcome
    if not consistent:
        assert "split" in outcome.message or "shard" in outcome.message  # type: ignore[union-attr]


# --- the files of issue 18, as a user meets them ---------------------------------------------


def issue_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each bad file of issue 18, and the words its refusal must contain."""
    folder.mkdir(parents=True, exist_ok=True)

    def hostile(name: str, **changes: tuple[int, object]) -> Path:
        header = moe_header()
        for key, (vtype, item) in changes.items():
            header.set(f"{ARCH}.{key}", vtype, item)
        return gb.write(folder / name, header)

    rows = moe_header()
    rows.tensors[6] = Tensor("blk.0.ffn_gate_exps.weight", [48, 32, 4], gb.Q4_0)
    files = {
        "absurd layer count": (hostile("layers.gguf", block_count=(gb.UINT32, 4_000_000_000)),
                               "qwen3moe.block_count is 4,000,000,000; llama.cpp loads 1 to 512"),
        "zero experts": (hostile("zero.gguf", expert_count=(gb.UINT32, 0)), "has no experts"),
        "more active than experts": (hostile("active.gguf", expert_used_count=(gb.UINT32, 5)),
                                     "expert_used_count is 5"),
        "zero active": (hostile("none-active.gguf", expert_used_count=(gb.UINT32, 0)),
                        "expert_used_count is 0"),
        "too many experts": (hostile("many.gguf", expert_count=(gb.UINT32, 4096)),
                             "at most 1024 experts"),
        "deep arrays": (gb.write(folder / "deep.gguf", moe_header().set(
            "tokenizer.deep", gb.ARRAY, gb.nested_arrays(100_000))), "array of arrays"),
        "row not a multiple of the block": (gb.write(folder / "rows.gguf", rows),
                                            "rows of 48 values, not a multiple of its quant's block size 32"),
    }
    unreadable = gb.write(folder / "unreadable.gguf", moe_header())
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything
        unreadable.unlink()
    else:
        files["unreadable"] = (unreadable, "cannot be read (Permission denied)")
    if Path("/proc/self/mem").is_file():  # a file whose first bytes fail to read, even for root
        (folder / "io-error.gguf").symlink_to("/proc/self/mem")
        files["read error"] = (folder / "io-error.gguf", "cannot be read (Input/output error)")
    return files


def test_every_reader_refuses_the_files_of_issue_18_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            tiny_moe_gguf: Path) -> None:
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    files = issue_files(tmp_path / "bad")
    library = Library(models_dir=tmp_path / "models")
    for what, (path, words) in files.items():
        with pytest.raises(ModelFileError) as refused:  # the advisor and the engine read this way
            read_model(path)
        assert path.name in refused.value.message and words in refused.value.message, what
        with pytest.raises(ModelFileError, match=words.replace("(", r"\(").replace(")", r"\)")):
            library.import_path(path)
    # a folder: every bad file is skipped with its reason, and the good one after them imported
    os.link(tiny_moe_gguf, tmp_path / "bad" / "zz-good.gguf")
    report = Library(models_dir=tmp_path / "models").import_path(tmp_path / "bad")
    assert [m.path.name for m in report.added] == ["zz-good.gguf"]
    assert {p.name for p, _ in report.skipped} == {p.name for p, _ in files.values()}


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MOEDESK_HOME": str(home)})


def test_the_cli_says_what_is_wrong_without_a_traceback(tmp_path: Path) -> None:
    files = issue_files(tmp_path / "bad")
    for command in (["advise"], ["library", "import"]):
        for what in ("absurd layer count", "more active than experts"):
            path, words = files[what]
            done = cli(*command, str(path), home=tmp_path / "home")
            assert done.returncode == 1, (command, what, done.stderr)
            assert done.stderr.startswith("error: ") and words in done.stderr, done.stderr
            assert "Traceback" not in done.stderr + done.stdout


def test_a_hub_repo_with_a_hostile_quant_still_plans_the_others(local_hub: hub_server.LocalHub,
                                                               tmp_path: Path,
                                                               tiny_moe_gguf: Path) -> None:
    files = issue_files(tmp_path / "bad")
    local_hub.add("moedesk/Hostile-GGUF", hub_server.HubRepo(files={
        "Tiny-Q4_0.gguf": tiny_moe_gguf.read_bytes(),
        "Tiny-Q8_0.gguf": files["absurd layer count"][0].read_bytes(),
        "Tiny-Q6_K.gguf": files["deep arrays"][0].read_bytes()}))
    done = cli("advise", "moedesk/Hostile-GGUF", home=tmp_path / "home")  # HF_ENDPOINT: local hub
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert "fits" in rows["Q4_0"]
    assert "cannot be loaded" in rows["Q8_0"] and "block_count is 4,000,000,000" in rows["Q8_0"]
    assert "array of arrays" in rows["Q6_K"]
