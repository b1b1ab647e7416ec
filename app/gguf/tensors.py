"""A GGUF file's tensors as the header lists them, and their classes in the field's words."""

from __future__ import annotations

import re
from dataclasses import dataclass

GGUF_MAGIC = b"GGUF"

# Tensor classes, in the field's words. Order matters: the first pattern that matches wins.
TENSOR_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("routed_experts", re.compile(r"\.ffn_(up|down|gate|gate_up)_exps\.")),
    ("shared_experts", re.compile(r"\.ffn_(up|down|gate|gate_up)_shexp\.|\.ffn_gate_inp_shexp\.")),
    ("router", re.compile(r"\.ffn_gate_inp\.|\.exp_probs_b")),
    ("attention", re.compile(r"\.attn_")),
    ("dense_ffn", re.compile(r"\.ffn_(up|down|gate)\.")),
    ("norms", re.compile(r"_norm\.")),
    ("embeddings", re.compile(r"^token_embd\.")),
    ("output", re.compile(r"^output\.")),
)
LAYER_OF = re.compile(r"^blk\.(\d+)\.")


def tensor_class(name: str) -> str:
    """The class of a tensor by its GGUF name: attention, routed_experts, norms, ..."""
    for cls, pattern in TENSOR_CLASSES:
        if pattern.search(name):
            return cls
    return "other"


def tensor_layer(name: str) -> int | None:
    match = LAYER_OF.match(name)
    return int(match.group(1)) if match else None


@dataclass
class TensorEntry:
    name: str
    shape: list[int]
    type_name: str
    n_bytes: int
    shard: int

    @property
    def tensor_class(self) -> str:
        return tensor_class(self.name)

    @property
    def layer(self) -> int | None:
        return tensor_layer(self.name)
