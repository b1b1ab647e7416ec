"""What a model file is: its shards, metadata, tensors and their classes.

Reads GGUF headers with ``app.gguf.header`` (the parser the advisor uses on the Hub too; it
skips token arrays instead of building them, so a 150k-token vocabulary costs milliseconds,
where the ``gguf`` package's reader took seconds) and checks what llama.cpp would otherwise
fail on with a terse log line: a missing shard, a file that is not a GGUF, a truncated file.
Every model it returns has passed ``app.gguf.validate.check_model`` (llama.cpp's limits, a
consistent split set), so callers may size lists from its counts.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from app.errors import MissingShardError, ModelFileError
from app.gguf.header import read_header_file
from app.gguf.tensors import GGUF_MAGIC, TensorEntry
from app.gguf.validate import check_model

SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
# Bytes per cached value of each KV cache type (ggml blocks of 32 values with their scales).
CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
    "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32,
}


@dataclass
class GGUFModel:
    """The parts of a GGUF model the engine and the advisor need."""

    shards: list[Path]
    metadata: dict[str, object]
    tensors: list[TensorEntry] = field(default_factory=list)
    # values of shard 1's small numeric arrays (``metadata`` holds every array's length):
    # per-layer hyperparameters such as a per-layer expert_used_count
    arrays: dict[str, list[int | float | bool]] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: object = None) -> object:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def arch_int(self, key: str, default: int = 0) -> int:
        """An integer key of the architecture (``<arch>.<key>``); ``default`` if absent (or not
        a finite number: ``check_model`` refuses such a value of the keys llama.cpp reads)."""
        value = self.arch_value(key)
        if isinstance(value, float) and not math.isfinite(value):
            return default
        return int(value) if isinstance(value, (int, float)) else default

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", self.shards[0].stem))

    @property
    def n_layer(self) -> int:
        return self.arch_int("block_count")

    @property
    def n_trunk_layers(self) -> int:
        """The layers llama.cpp runs: ``n_layer`` (the file's blocks, which ``n_gpu_layers``
        counts) less the multi-token-prediction blocks at the end (GLM-4.5's), which it skips."""
        return self.n_layer - self.arch_int("nextn_predict_layers")

    @property
    def layers_text(self) -> str:
        """The layers for people: "61 layers (3 dense)", "92 layers (3 dense; +1
        multi-token-prediction block, not loaded)"."""
        n = self.n_trunk_layers
        extras = []
        dense = n - len(self.moe_layers) if self.n_expert else 0
        if dense:
            extras.append(f"{dense} dense")
        if self.n_layer > n:
            extras.append(f"+{self.n_layer - n} multi-token-prediction block, not loaded")
        return f"{n} layers" + (f" ({'; '.join(extras)})" if extras else "")

    @property
    def loaded_tensors(self) -> list[TensorEntry]:
        """The tensors llama.cpp allocates: all but those of the skipped prediction blocks."""
        trunk = self.n_trunk_layers
        if trunk == self.n_layer:
            return self.tensors
        return [t for t in self.tensors if t.layer is None or t.layer < trunk]

    @property
    def n_expert(self) -> int:
        return self.arch_int("expert_count")

    @property
    def n_expert_used(self) -> int:
        """Active experts per token; of a per-layer list (an array), the largest, as llama.cpp
        sizes its buffers."""
        per_layer = self.arrays.get(f"{self.architecture}.expert_used_count")
        if per_layer:
            return max(int(v) for v in per_layer)
        return self.arch_int("expert_used_count")

    @property
    def n_ctx_train(self) -> int:
        return self.arch_int("context_length")

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return str(value) if value is not None else None

    @property
    def size_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        total = 0
        for t in self.tensors:
            count = 1
            for dim in t.shape:
                count *= dim
            total += count
        return total

    @property
    def moe_layers(self) -> list[int]:
        """Layers with routed experts, in order (dense leading layers excluded)."""
        return sorted({t.layer for t in self.loaded_tensors
                       if t.tensor_class == "routed_experts" and t.layer is not None})

    def expert_bytes(self, layers: Iterable[int] | None = None) -> int:
        """One routed expert's bytes (its up, gate and down slices) in the largest of ``layers``
        (default: every MoE layer); 0 without routed experts."""
        return self._one_expert(lambda t: t.n_bytes, self.moe_layers if layers is None else layers)

    def expert_weights(self) -> int:
        """One routed expert's weights (its up, gate and down slices) in the largest MoE layer;
        0 without routed experts."""
        return self._one_expert(lambda t: math.prod(t.shape), self.moe_layers)

    def _one_expert(self, size: Callable[[TensorEntry], int], layers: Iterable[int]) -> int:
        """``size`` of one routed expert's tensors in the largest of ``layers``."""
        wanted = set(layers)
        per_layer: dict[int, int] = defaultdict(int)
        for t in self.tensors:
            if t.tensor_class == "routed_experts" and t.layer in wanted:
                per_layer[t.layer] += size(t)
        return max(per_layer.values(), default=0) // max(self.n_expert, 1)

    def bytes_by_class(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for t in self.tensors:
            totals[t.tensor_class] += t.n_bytes
        return dict(totals)


def shard_names(prefix: str, count: int) -> list[str]:
    """The file names of a model split in ``count`` shards (llama.cpp's gguf-split naming)."""
    return [f"{prefix}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def split_numbers(name: str) -> tuple[str, int, int] | None:
    """(prefix, shard number, shard count) of a split model's file name, None if not split.

    Raises ModelFileError for a name that cannot be a shard (``-00000-of-00003``,
    ``-00004-of-00003``): llama.cpp would not find the set from it.
    """
    match = SHARD_NAME.match(name)
    if not match:
        return None
    number, count = int(match.group("no")), int(match.group("count"))
    if not 1 <= number <= count:
        raise ModelFileError(f"{name} is named as shard {number} of {count} of a split model, "
                             "which cannot be.", "Rename the shards as they were downloaded "
                             "(NAME-00001-of-00003.gguf and so on).")
    return match.group("prefix"), number, count


def shard_paths(path: Path) -> list[Path]:
    """All shards of the model ``path`` belongs to (just ``path`` if it is not split).

    Raises MissingShardError naming every absent shard.
    """
    numbers = split_numbers(path.name)
    if numbers is None:
        return [path]
    prefix, _, count = numbers
    shards = [path.with_name(name) for name in shard_names(prefix, count)]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise MissingShardError(
            f"{len(missing)} of {count} shards of {prefix} are missing: {', '.join(missing)}",
            f"Download the missing shard(s) into {path.parent}, next to the others.",
        )
    return shards


def _check_header(path: Path) -> None:
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file.",
                             "Pick the .gguf file (for a split model, any of its shards).")
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist.", "Check the path, or pick the file again.")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{path.name} is not a GGUF model (it starts with {magic!r}, not b'GGUF').",
            "MoE Desk runs llama.cpp GGUF files; convert the model or download a GGUF build.",
        )


def read_model(path: Path | str) -> GGUFModel:
    """Read the headers of every shard of the model at ``path`` (no tensor data is read).

    Raises ModelFileError (not a GGUF, truncated, unreadable) or MissingShardError.
    """
    first = Path(path).expanduser()
    _check_header(first)
    shards = shard_paths(first)
    model = GGUFModel(shards=shards, metadata={})
    shard_metadata: list[dict[str, object]] = []
    tensor_counts: list[int] = []
    for index, shard in enumerate(shards):  # shard_paths found them all; the parser checks magic
        try:
            with shard.open("rb") as fh:
                header = read_header_file(fh, shard.name)
            file_size = shard.stat().st_size
        except OSError as exc:
            raise _unreadable(shard, exc) from exc
        if index == 0:
            model.metadata = header.metadata  # arrays (token lists) as their length
            model.arrays = header.arrays
        if header.data_end > file_size:
            raise ModelFileError(
                f"{shard.name} is truncated: it has {file_size:,} bytes, its tensors need "
                f"{header.data_end:,}.",
                "The download was cut short; download this file again.",
            )
        model.tensors += [replace(t, shard=index) for t in header.tensors]
        shard_metadata.append(header.metadata)
        tensor_counts.append(len(header.tensors))
    check_model(model, shard_metadata, tensor_counts, [s.name for s in shards])
    return model


def _unreadable(path: Path, exc: OSError) -> ModelFileError:
    return ModelFileError(f"{path.name} cannot be read ({exc.strerror or exc}).",
                          f"Check that {path} is readable by you (its permissions) and that "
                          "the disk is healthy.")


@dataclass(frozen=True)
class AttentionShape:
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int


def attention_shape(model: GGUFModel) -> AttentionShape:
    """Head counts and head sizes, with llama.cpp's defaults for absent keys."""
    n_head = model.arch_int("attention.head_count")
    n_head_kv = model.arch_int("attention.head_count_kv", n_head)
    key_length = model.arch_int("attention.key_length", model.arch_int("embedding_length") // max(n_head, 1))
    value_length = model.arch_int("attention.value_length", key_length)
    return AttentionShape(n_head, n_head_kv, key_length, value_length)


def kv_bytes_per_layer(model: GGUFModel, n_ctx: int, type_k: str = "f16", type_v: str = "f16") -> int:
    """KV cache bytes of one attention layer for ``n_ctx`` cells.

    Grouped-query attention caches K and V of every KV head. Multi-head latent attention
    (DeepSeek-V2/V3, Kimi K2; GGUFs with ``attention.key_length_mla``) caches one compressed
    latent per cell, ``kv_lora_rank`` values plus the ``rope.dimension_count`` RoPE'd key
    values, in the K cache only: llama.cpp allocates no V cache for MLA (V is a view of K).
    """
    rank = model.arch_int("attention.kv_lora_rank")
    if rank and model.arch_int("attention.key_length_mla"):
        return int(n_ctx * (rank + model.arch_int("rope.dimension_count")) * CACHE_TYPE_BYTES[type_k])
    a = attention_shape(model)
    per_cell = a.n_head_kv * (a.key_length * CACHE_TYPE_BYTES[type_k]
                              + a.value_length * CACHE_TYPE_BYTES[type_v])
    return int(n_ctx * per_cell)


def sliding_window_layers(model: GGUFModel) -> set[int]:
    """Layers whose attention sees only the last ``attention.sliding_window`` tokens: gpt-oss's
    even layers (llama.cpp's default pattern for it: every other layer, the first one sliding)."""
    if model.architecture != "gpt-oss" or not model.arch_int("attention.sliding_window"):
        return set()
    return set(range(0, model.n_trunk_layers, 2))


def sliding_window_cells(model: GGUFModel, cells: int, n_ubatch: int, n_parallel: int = 1) -> int:
    """The cells llama.cpp gives a sliding-window layer's cache (the engine turns swa_full off,
    as llama-server does): each sequence's window plus one ubatch, padded to 256."""
    need = model.arch_int("attention.sliding_window") * n_parallel + n_ubatch
    return min(cells, -(-need // 256) * 256)


def kv_bytes_by_layer(model: GGUFModel, cells: int, type_k: str = "f16", type_v: str = "f16", *,
                      n_ubatch: int = 512, n_parallel: int = 1) -> list[int]:
    """The KV cache of each layer llama.cpp runs for ``cells`` cells (n_ctx of each of
    ``n_parallel`` sequences), a sliding-window layer with its window's cells only."""
    sliding = sliding_window_layers(model)
    full = kv_bytes_per_layer(model, cells, type_k, type_v)
    window = kv_bytes_per_layer(model, sliding_window_cells(model, cells, n_ubatch, n_parallel),
                                type_k, type_v)
    return [window if layer in sliding else full for layer in range(model.n_trunk_layers)]


def kv_bytes(model: GGUFModel, cells: int, type_k: str = "f16", type_v: str = "f16", *,
             n_ubatch: int = 512, n_parallel: int = 1) -> int:
    """The whole KV cache (see ``kv_bytes_by_layer``)."""
    return sum(kv_bytes_by_layer(model, cells, type_k, type_v, n_ubatch=n_ubatch,
                                 n_parallel=n_parallel))
