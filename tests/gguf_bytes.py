"""GGUF headers written byte by byte, hostile ones included.

The ``gguf`` package's writer (and MoE Desk's synthetic writer on top of it) refuses what a
hostile file contains: wrong types for known keys, shapes ggml cannot hold, offsets out of
place, arrays of arrays. The tests of hostile input need exactly those, so this writes the
format (GGUF v3, little-endian) directly from plain values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

# GGUF value types (gguf.GGUFValueType)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
FORMATS = {UINT8: "B", INT8: "b", UINT16: "H", INT16: "h", UINT32: "I", INT32: "i", FLOAT32: "f",
           BOOL: "?", UINT64: "Q", INT64: "q", FLOAT64: "d"}
RANGES = {UINT8: (0, 2**8 - 1), INT8: (-(2**7), 2**7 - 1), UINT16: (0, 2**16 - 1),
          INT16: (-(2**15), 2**15 - 1), UINT32: (0, 2**32 - 1), INT32: (-(2**31), 2**31 - 1),
          UINT64: (0, 2**64 - 1), INT64: (-(2**63), 2**63 - 1)}
# ggml types: (id, block size, bytes per block)
F32, F16, Q4_0, Q8_0, Q4_K = (0, 1, 4), (1, 1, 2), (2, 32, 18), (8, 32, 34), (12, 256, 144)
ALIGNMENT = 32


@dataclass
class Tensor:
    name: str
    shape: list[int]  # as the file lists it: ne0 (a row's length) first
    ggml: tuple[int, int, int] = F32
    offset: int | None = None  # None: where ggml expects it (after the previous tensor)

    @property
    def n_bytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * self.ggml[2] // self.ggml[1]


@dataclass
class Header:
    """Metadata as (key, type, value); an ARRAY value is (item type, [items]) or raw bytes."""

    kv: list[tuple[str, int, object]] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)

    def set(self, key: str, vtype: int, value: object) -> Header:
        self.kv = [item for item in self.kv if item[0] != key] + [(key, vtype, value)]
        return self


def string(text: str | bytes) -> bytes:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def value(vtype: int, item: object) -> bytes:
    if vtype == STRING:
        return string(item)  # type: ignore[arg-type]
    if vtype == ARRAY:
        if isinstance(item, bytes):
            return item  # raw: item type, count and items, as the test wrote them
        item_type, items = item  # type: ignore[misc]
        return struct.pack("<IQ", item_type, len(items)) + b"".join(value(item_type, i) for i in items)
    return struct.pack("<" + FORMATS[vtype], item)


def nested_arrays(depth: int) -> bytes:
    """The payload of an array nested ``depth`` levels (arrays of one array), innermost empty."""
    return struct.pack("<IQ", ARRAY, 1) * (depth - 1) + struct.pack("<IQ", UINT8, 0)


def header_bytes(header: Header) -> tuple[bytes, int]:
    """The header, padded to the alignment; and where the last tensor's data ends."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(header.tensors), len(header.kv))]
    for key, vtype, item in header.kv:
        out += [string(key), struct.pack("<I", vtype), value(vtype, item)]
    offset = end = 0
    for t in header.tensors:
        at = offset if t.offset is None else t.offset
        out += [string(t.name), struct.pack("<I", len(t.shape)),
                b"".join(struct.pack("<Q", d) for d in t.shape), struct.pack("<IQ", t.ggml[0], at)]
        offset = at + -(-t.n_bytes // ALIGNMENT) * ALIGNMENT
        end = max(end, at + t.n_bytes)
    data = b"".join(out)
    data += b"\0" * (-len(data) % ALIGNMENT)
    return data, len(data) + end


def write(path: Path, header: Header, *, data_bytes: int | None = None) -> Path:
    """Write ``header`` and a sparse hole for the tensor data (``data_bytes`` to cut it short)."""
    data, end = header_bytes(header)
    with open(path, "wb") as out:
        out.write(data)
        out.truncate(end if data_bytes is None else len(data) + data_bytes)
    return path


def moe_header(arch: str = "qwen3moe", n_layer: int = 2, n_expert: int = 4, n_used: int = 2,
               n_embd: int = 64, n_ff: int = 32, n_vocab: int = 128) -> Header:
    """A small, consistent MoE model's header: what the advisor and the library accept."""
    kv: list[tuple[str, int, object]] = [
        ("general.architecture", STRING, arch), ("general.name", STRING, "hostile test model"),
        (f"{arch}.block_count", UINT32, n_layer), (f"{arch}.context_length", UINT32, 4096),
        (f"{arch}.embedding_length", UINT32, n_embd), (f"{arch}.feed_forward_length", UINT32, n_ff),
        (f"{arch}.expert_feed_forward_length", UINT32, n_ff),
        (f"{arch}.attention.head_count", UINT32, 4), (f"{arch}.attention.head_count_kv", UINT32, 2),
        (f"{arch}.expert_count", UINT32, n_expert), (f"{arch}.expert_used_count", UINT32, n_used),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, [f"t{i}" for i in range(n_vocab)])),
    ]
    tensors = [Tensor("token_embd.weight", [n_embd, n_vocab], Q8_0)]
    for layer in range(n_layer):
        blk = f"blk.{layer}"
        tensors += [Tensor(f"{blk}.attn_norm.weight", [n_embd]),
                    Tensor(f"{blk}.attn_q.weight", [n_embd, n_embd], Q8_0),
                    Tensor(f"{blk}.attn_k.weight", [n_embd, n_embd // 2], Q8_0),
                    Tensor(f"{blk}.attn_v.weight", [n_embd, n_embd // 2], Q8_0),
                    Tensor(f"{blk}.attn_output.weight", [n_embd, n_embd], Q8_0),
                    Tensor(f"{blk}.ffn_gate_inp.weight", [n_embd, n_expert]),
                    Tensor(f"{blk}.ffn_gate_exps.weight", [n_embd, n_ff, n_expert], Q4_0),
                    Tensor(f"{blk}.ffn_up_exps.weight", [n_embd, n_ff, n_expert], Q4_0),
                    Tensor(f"{blk}.ffn_down_exps.weight", [n_ff, n_embd, n_expert], Q4_0)]
    tensors += [Tensor("output_norm.weight", [n_embd]), Tensor("output.weight", [n_embd, n_vocab], Q8_0)]
    return Header(kv, tensors)
