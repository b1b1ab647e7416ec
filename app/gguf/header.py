"""A GGUF file's header (metadata and tensor table), parsed from any byte source.

The parser reads GGUF v2/v3 through a ``ByteSource`` (a local file object here, an HTTP URL in
``app.gguf.http_range``) and fetches only what the header needs: a first chunk, then twice as much
each time it runs past what it has, up to a cap. ``app.gguf.info.read_model`` uses it for
local files. It agrees exactly with the ``gguf`` package's reader (the tests hold them
together), except that array values are replaced by their length instead of being built:
``general.*`` and the other keys keep their types, tensor sizes come from the ggml type's block
size and type size. What llama.cpp itself would refuse while reading a header (an array of
arrays, a tensor of more than four dimensions, rows that do not fill whole quant blocks, tensor
data out of place) is refused here, with the checks of ``app.gguf.validate``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from app.errors import ModelFileError
from app.gguf.tensors import GGUF_MAGIC, TensorEntry
from app.gguf.validate import (
    check_tensor_dims,
    check_tensor_offsets,
    check_tensor_shape,
    nested_array_error,
)

FIRST_CHUNK = 64 << 10  # holds a small header whole; real ones (~5-10 MB of vocab) take ~8 doublings
MAX_HEADER_BYTES = 64 << 20  # the largest known headers (250k-token vocabularies) are ~15 MB
DEFAULT_ALIGNMENT = 32
SUPPORTED_VERSIONS = (2, 3)
# Numeric arrays up to this long keep their values (``GGUFHeader.arrays``): per-layer
# hyperparameters (expert_used_count, head_count) that validation needs; llama.cpp reads
# per-layer arrays of at most LLAMA_MAX_LAYERS entries.
SMALL_ARRAY = 512

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT32: "f", GGUFValueType.FLOAT64: "d",
    GGUFValueType.BOOL: "?",
}


class ByteSource(Protocol):
    """Bytes of one file by offset. ``read`` returns fewer than ``size`` only at the end."""

    label: str  # the file's name or URL, for error messages
    bytes_fetched: int  # bytes actually transferred so far (skipped ones included)
    file_size: int | None  # known once the first read has answered, where the source says

    def read(self, start: int, size: int) -> bytes: ...


@dataclass
class GGUFHeader:
    """One file's GGUF header: what precedes the tensor data."""

    version: int
    metadata: dict[str, object]
    tensors: list[TensorEntry]  # shard index 0; the caller renumbers for split models
    alignment: int
    data_offset: int  # where tensor data starts: the aligned end of the header
    data_end: int  # where the last tensor's data ends (the file must be at least this long)
    header_bytes_fetched: int  # bytes the source transferred to parse it
    # values of the numeric arrays of at most SMALL_ARRAY items (``metadata`` has their length)
    arrays: dict[str, list[int | float | bool]] = field(default_factory=dict)


class FileSource:
    """A local file object (opened in binary mode) as a byte source."""

    def __init__(self, fh: BinaryIO, label: str) -> None:
        self._fh = fh
        self.label = label
        self.bytes_fetched = 0
        self.file_size: int | None = None

    def read(self, start: int, size: int) -> bytes:
        self._fh.seek(start)
        data = self._fh.read(size)
        self.bytes_fetched += len(data)
        return data


# --- the parser -----------------------------------------------------------------------------


class _Cursor:
    """Reads forward through a source, fetching twice as much whenever it runs short."""

    def __init__(self, source: ByteSource, first_chunk: int, max_header: int) -> None:
        self.source = source
        self.buf = bytearray()
        self.pos = 0
        self.order = "<"  # becomes ">" for a big-endian file
        self._first_chunk = first_chunk
        self._max_header = max_header
        self._at_end = False

    def need(self, n: int) -> None:
        end = self.pos + n
        if end <= len(self.buf):
            return
        if end > self._max_header:
            raise ModelFileError(
                f"The GGUF header of {self.source.label} is larger than {_size_text(self._max_header)} "
                "(or damaged); only that much is read before downloading.",
                "Download the file to inspect it, or raise the limit if the model is known to be good.",
            )
        while len(self.buf) < end and not self._at_end:
            want = min(max(end, 2 * len(self.buf), self._first_chunk), self._max_header) - len(self.buf)
            data = self.source.read(len(self.buf), want)
            self.buf += data
            self._at_end = len(data) < want
        if len(self.buf) < end:
            raise ModelFileError(
                f"{self.source.label} is damaged: it ends inside its GGUF header "
                f"(at {len(self.buf):,} bytes).",
                "The file is probably incomplete; download it again.",
            )

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        full = self.order + fmt
        size = struct.calcsize(full)
        self.need(size)
        values = struct.unpack_from(full, self.buf, self.pos)
        self.pos += size
        return values

    def u32(self) -> int:
        return int(self.unpack("I")[0])

    def u64(self) -> int:
        return int(self.unpack("Q")[0])

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n

    def string(self) -> str:
        n = self.u64()
        self.need(n)
        text = self.buf[self.pos:self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return text


def _size_text(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n:,} bytes"


def _value_type(cur: _Cursor, raw: int) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise ModelFileError(f"{cur.source.label} is damaged: unknown GGUF value type {raw}.",
                             "The file is probably incomplete or corrupt; download it again.") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType, key: str,
                arrays: dict[str, list[int | float | bool]]) -> object:
    if vtype == GGUFValueType.STRING:
        return cur.string()
    if vtype == GGUFValueType.ARRAY:
        # token lists are huge and not needed here: keep only their length, as read_model does
        item_type, count = _value_type(cur, cur.u32()), cur.u64()
        if item_type == GGUFValueType.ARRAY:
            raise nested_array_error(cur.source.label, key)
        if item_type == GGUFValueType.STRING:
            for _ in range(count):
                cur.skip(cur.u64())
        elif count <= SMALL_ARRAY:
            arrays[key] = list(cur.unpack(f"{count}{_SCALAR_FORMATS[item_type]}"))
        else:
            cur.skip(count * struct.calcsize(_SCALAR_FORMATS[item_type]))
        return count
    return cur.unpack(_SCALAR_FORMATS[vtype])[0]


def _read_tensor_info(cur: _Cursor) -> tuple[TensorEntry, int]:
    name = cur.string()
    n_dims = cur.u32()
    check_tensor_dims(cur.source.label, name, n_dims)  # before reading that many numbers
    shape = [cur.u64() for _ in range(n_dims)]
    raw_type, offset = cur.u32(), cur.u64()
    try:
        ggml_type = GGMLQuantizationType(raw_type)
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError):
        raise ModelFileError(f"{cur.source.label}: tensor {name} has ggml type {raw_type}, unknown to "
                             "this version of the gguf package.", "Update the gguf package.") from None
    check_tensor_shape(cur.source.label, name, shape, ggml_type.name, block_size)
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    n_bytes = n_elements * type_size // block_size
    return TensorEntry(name=name, shape=shape, type_name=ggml_type.name, n_bytes=n_bytes, shard=0), offset


def read_header(source: ByteSource, *, first_chunk: int = FIRST_CHUNK,
                max_header: int = MAX_HEADER_BYTES) -> GGUFHeader:
    """Parse the GGUF header of ``source``, fetching only as much of it as the header needs.

    Raises ModelFileError: not a GGUF, unsupported version, damaged, header over ``max_header``.
    """
    cur = _Cursor(source, first_chunk, max_header)
    cur.need(4)
    magic = bytes(cur.buf[:4])
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{source.label} is not a GGUF model (it starts with {magic!r}, not b'GGUF').",
            "MoE Desk runs llama.cpp GGUF files; pick a GGUF build of the model.",
        )
    cur.pos = 4
    version = cur.u32()
    if version & 0xFFFF == 0:  # written on a big-endian machine: the version reads byte-swapped
        cur.order, cur.pos = ">", 4
        version = cur.u32()
    if version not in SUPPORTED_VERSIONS:
        raise ModelFileError(f"{source.label} is GGUF version {version}; versions 2 and 3 are read.",
                             "Convert the model again with a current llama.cpp.")
    n_tensors, n_kv = cur.u64(), cur.u64()

    metadata: dict[str, object] = {}
    arrays: dict[str, list[int | float | bool]] = {}
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = cur.string()
        vtype = _value_type(cur, cur.u32())
        value = _read_value(cur, vtype, key, arrays)
        if key in metadata:
            raise ModelFileError(f"{source.label} is damaged: the key {key} appears twice.",
                                 "Download the file again.")
        metadata[key] = value
        if key == "general.alignment":
            if vtype != GGUFValueType.UINT32 or not isinstance(value, int) or value <= 0 \
                    or value & (value - 1):
                raise ModelFileError(f"{source.label} is damaged: general.alignment is {value!r}, "
                                     "not a power of two.", "Download the file again.")
            alignment = value

    infos = [_read_tensor_info(cur) for _ in range(n_tensors)]
    data_offset = -(-cur.pos // alignment) * alignment
    tensors = [entry for entry, _ in infos]
    if len({t.name for t in tensors}) != len(tensors):
        raise ModelFileError(f"{source.label} is damaged: a tensor name appears twice.",
                             "Download the file again.")
    check_tensor_offsets(source.label, [(t.name, offset, t.n_bytes) for t, offset in infos], alignment)
    data_end = max((data_offset + offset + t.n_bytes for t, offset in infos), default=data_offset)
    return GGUFHeader(version=version, metadata=metadata, tensors=tensors, alignment=alignment,
                      data_offset=data_offset, data_end=data_end,
                      header_bytes_fetched=source.bytes_fetched, arrays=arrays)


def read_header_file(fh: BinaryIO, label: str = "the file", **limits: int) -> GGUFHeader:
    """Parse the GGUF header of an open local file (binary mode) without reading tensor data."""
    return read_header(FileSource(fh, label), **limits)
