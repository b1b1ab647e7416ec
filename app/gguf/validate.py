"""Checks on a GGUF model's header before anything trusts it: one validation for every reader.

A header is data from a stranger (a download, a Hub upload, a file a user picked). The
advisor sizes per-layer lists from ``block_count``; llama.cpp aborts the whole engine process
(GGML_ASSERT, SIGABRT) on expert counts outside its limits, and refuses, late and tersely,
tensors whose rows do not fill whole quant blocks or split sets whose shards do not belong
together. So ``app.gguf.header`` calls the per-tensor checks while it parses (before a size is
computed from a shape), and ``read_model`` (local files: the advisor, the library, the engine)
and ``read_remote_model`` (the Hub) call ``check_model`` on the assembled model, before
anything is allocated from it. Every failure is a ModelFileError naming the file and the field.

The limits are llama.cpp's own, from the vendored source this app builds:
``src/llama-hparams.h`` (LLAMA_MAX_LAYERS, LLAMA_MAX_EXPERTS), the asserts of
``llama_model_base::load_hparams`` in ``src/llama-model.cpp``, and ``gguf_init_from_file_impl``
in ``ggml/src/gguf.cpp`` (GGML_MAX_DIMS, GGML_MAX_NAME, block sizes, tensor offsets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from app.errors import ModelFileError

if TYPE_CHECKING:
    from app.gguf.info import GGUFModel

LLAMA_MAX_LAYERS = 512  # load_hparams: GGML_ASSERT(0 < n_layer <= LLAMA_MAX_LAYERS)
LLAMA_MAX_EXPERTS = 1024  # load_hparams: GGML_ASSERT(n_expert <= LLAMA_MAX_EXPERTS)
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64  # a tensor name, with its terminating NUL
INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1

DAMAGED_HINT = ("The file is damaged, or was written by a tool llama.cpp does not follow: "
                "download it again, or pick another upload of the model.")
SPLIT_HINT = ("The shards do not belong together: download the whole split set again into one "
              "folder (every -0000k-of-0000N file of the same upload).")

# Integer hyperparameters (``<arch>.<key>``) that llama.cpp reads as uint32 and the advisor
# computes sizes from. A float, a string or a negative number in one of them is a damaged file
# to llama.cpp (it throws on the type), and would be a traceback or a runaway size here.
INTEGER_KEYS = (
    "block_count", "context_length", "embedding_length", "feed_forward_length",
    "expert_feed_forward_length", "expert_shared_feed_forward_length", "expert_count",
    "expert_used_count", "expert_shared_count", "expert_group_count", "expert_group_used_count",
    "leading_dense_block_count", "nextn_predict_layers", "vocab_size", "rope.dimension_count",
    "attention.head_count", "attention.head_count_kv", "attention.key_length",
    "attention.value_length", "attention.kv_lora_rank", "attention.key_length_mla",
    "attention.value_length_mla",
)


def header_error(label: str, what: str, hint: str = DAMAGED_HINT) -> ModelFileError:
    """A ModelFileError for ``label`` (a file name or URL), in the words used for all of them."""
    return ModelFileError(f"{label} is not a model llama.cpp can load: {what}.", hint)


# --- while parsing: one tensor at a time ----------------------------------------------------


def check_tensor_dims(label: str, name: str, n_dims: int) -> None:
    """Before a tensor's dimensions are read: ggml has at most four."""
    if len(name.encode("utf-8", "surrogatepass")) >= GGML_MAX_NAME:
        raise header_error(label, f"the tensor name '{name[:80]}' is longer than llama.cpp's "
                           f"{GGML_MAX_NAME - 1} bytes")
    if n_dims > GGML_MAX_DIMS:
        raise header_error(label, f"tensor {name} has {n_dims:,} dimensions; ggml tensors have "
                           f"at most {GGML_MAX_DIMS}")


def check_tensor_shape(label: str, name: str, shape: Sequence[int], type_name: str,
                       block_size: int) -> None:
    """A tensor's shape against ggml's rules, before its size is computed from it."""
    n_elements = 1
    for dim in shape:
        if dim > INT64_MAX:
            raise header_error(label, f"tensor {name} has a dimension of {dim:,} (negative to "
                               "ggml, which reads it as a signed 64-bit number)")
        n_elements *= dim
    if n_elements > INT64_MAX:
        raise header_error(label, f"tensor {name} of shape {list(shape)} has more elements than "
                           "ggml can count")
    row = shape[0] if shape else 1
    if row % block_size:
        raise header_error(label, f"tensor {name} ({type_name}) has rows of {row:,} values, not a "
                           f"multiple of its quant's block size {block_size}")


def check_tensor_offsets(label: str, tensors: Sequence[tuple[str, int, int]],
                         alignment: int) -> None:
    """(name, offset, bytes) in file order: ggml wants each tensor's data right after the last
    one's, padded to the alignment (gguf.cpp: "tensor has offset X, expected Y")."""
    expected = 0
    for name, offset, n_bytes in tensors:
        if offset != expected:
            raise header_error(label, f"tensor {name}'s data is at offset {offset:,} of the data "
                               f"section, where llama.cpp expects {expected:,}")
        expected += -(-n_bytes // alignment) * alignment


def nested_array_error(label: str, key: str) -> ModelFileError:
    """llama.cpp reads no array of arrays (gguf.cpp: "key has invalid GGUF type"); refusing the
    first level of nesting also keeps a hostile file from nesting arrays a million deep."""
    return header_error(label, f"the metadata key {key} holds an array of arrays")


# --- the whole model ------------------------------------------------------------------------


def check_model(model: GGUFModel, shard_metadata: Sequence[Mapping[str, object]],
                shard_tensor_counts: Sequence[int], labels: Sequence[str]) -> None:
    """Every value of the assembled model that the advisor or llama.cpp trusts.

    ``shard_metadata`` and ``shard_tensor_counts`` are per shard, in order; ``labels`` name
    the shards (file names or URLs) for the messages.
    """
    _check_split_set(shard_metadata, shard_tensor_counts, labels)
    names: set[str] = set()
    for tensor in model.tensors:
        if tensor.name in names:
            raise header_error(labels[tensor.shard], f"the tensor {tensor.name} is also in another "
                               "shard", SPLIT_HINT)
        names.add(tensor.name)
    _check_hparams(model, labels[0])


def _check_split_set(shard_metadata: Sequence[Mapping[str, object]],
                     shard_tensor_counts: Sequence[int], labels: Sequence[str]) -> None:
    """The split keys llama.cpp's loader checks (llama-model-loader.cpp), before it does; and
    split.tensors.count on every shard (gguf-split writes it on each), which tells a shard of
    another model's split set, where llama.cpp would only find tensors missing."""
    n = len(shard_metadata)
    count = shard_metadata[0].get("split.count")
    if n == 1:
        if _is_int(count) and count > 1:  # type: ignore[operator]
            raise header_error(labels[0], f"it is one of {count} shards of a split model (split.count), "
                               "but its name is not of the form NAME-00001-of-"
                               f"{count:05d}.gguf", "Keep the shards' names as they were "
                               "downloaded: llama.cpp finds the others by the first one's name.")
        return
    total = sum(shard_tensor_counts)
    for index, meta in enumerate(shard_metadata):
        for key, want in (("split.count", n), ("split.no", index), ("split.tensors.count", total)):
            if key not in meta and (index > 0 and key != "split.no"):
                continue  # llama.cpp reads these of the first shard only
            if meta.get(key) != want:
                found = "missing" if key not in meta else f"{meta[key]!r}"
                raise header_error(labels[index], f"its {key} is {found}, where shard {index + 1} of "
                                   f"the {n} that its name says, holding {total:,} tensors together, "
                                   f"needs {want}", SPLIT_HINT)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_hparams(model: GGUFModel, label: str) -> None:
    arch = model.architecture
    for key in INTEGER_KEYS:
        name = f"{arch}.{key}"
        # a per-layer array (its values kept when short) or one value
        for value in model.arrays.get(name) or [model.metadata.get(name)]:
            if value is None:
                continue
            if not _is_int(value):
                raise header_error(label, f"{name} is {value!r} ({type(value).__name__}), not "
                                   "a whole number")
            if not 0 <= value <= UINT32_MAX:  # type: ignore[operator]
                raise header_error(label, f"{name} is {value:,}, outside 0 to {UINT32_MAX:,}")

    layers = model.metadata.get(f"{arch}.block_count")
    if layers is not None and not 1 <= layers <= LLAMA_MAX_LAYERS:  # type: ignore[operator]
        raise header_error(label, f"{arch}.block_count is {layers:,}; llama.cpp loads 1 to "
                           f"{LLAMA_MAX_LAYERS} layers")
    nextn = model.arch_int("nextn_predict_layers")
    if layers is not None and nextn > layers:  # type: ignore[operator]
        raise header_error(label, f"{arch}.nextn_predict_layers is {nextn:,}, more than its "
                           f"{layers} layers (block_count)")
    problem = expert_count_problem(model.n_expert, model.n_expert_used,
                                   model.arch_int("expert_group_count"),
                                   model.arch_int("expert_group_used_count"), arch)
    if problem:
        raise header_error(label, problem)
    if layers is not None:
        for tensor in model.tensors:
            if tensor.layer is not None and tensor.layer >= layers:  # type: ignore[operator]
                raise header_error(label, f"tensor {tensor.name} belongs to layer {tensor.layer:,}, "
                                   f"but the model has {layers} layers (block_count)")


def expert_count_problem(n_expert: int, n_expert_used: int, n_groups: int = 0,
                         n_group_used: int = 0, arch: str = "") -> str | None:
    """Why llama.cpp would abort on these expert counts (its GGML_ASSERTs in load_hparams),
    or None. ``n_expert_used`` is the model's own or a placement's override (the engine checks
    both: llama.cpp asserts the same condition on either)."""
    key = f"{arch}." if arch else ""
    if n_expert > LLAMA_MAX_EXPERTS:
        return (f"{key}expert_count is {n_expert:,}; llama.cpp supports at most "
                f"{LLAMA_MAX_EXPERTS} experts per layer")
    if n_expert == 0:
        if n_expert_used:
            return (f"{key}expert_used_count is {n_expert_used}, but the model has no experts "
                    f"({key}expert_count is 0 or absent)")
        if n_groups:
            return f"{key}expert_group_count is {n_groups}, but the model has no experts"
        return None
    if not 1 <= n_expert_used <= n_expert:
        return (f"{key}expert_used_count is {n_expert_used}: the active experts per token must "
                f"be 1 to {n_expert} ({key}expert_count)")
    if n_groups >= n_expert:
        return (f"{key}expert_group_count is {n_groups}, not fewer than its {n_expert} experts")
    if n_groups > 1 and (n_expert % n_groups or not 0 < n_group_used < n_groups):
        return (f"{n_expert} experts in {n_groups} groups ({key}expert_group_count) of which "
                f"{n_group_used} are used ({key}expert_group_used_count): the groups must divide "
                "the experts evenly, and 1 to groups - 1 of them be used")
    return None
