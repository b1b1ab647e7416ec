"""What a model on a web server is, read from its GGUF headers alone.

Before downloading 400 GB, the advisor wants the same ``GGUFModel`` that ``read_model()`` gives
for a local file: metadata, every tensor's shape, type and size. A GGUF header is a few MB at
the start of each shard, so we fetch just that with HTTP Range requests: a first chunk, then
twice as much each time the parser runs past what it has, up to a cap.

The parser reads GGUF v2/v3 from any byte source (an HTTP URL or a local file object) and
agrees exactly with ``app.gguf_info.read_model``: array values are replaced by their length,
``general.*`` and the other keys keep their types, tensor sizes come from the ggml type's
block size and type size.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPResponse
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from app.engine.errors import MissingShardError, ModelFileError
from app.gguf_info import GGUF_MAGIC, SHARD_NAME, GGUFModel, TensorEntry, shard_names

FIRST_CHUNK = 64 << 10  # holds a small header whole; real ones (~5-10 MB of vocab) take ~8 doublings
MAX_HEADER_BYTES = 64 << 20  # the largest known headers (250k-token vocabularies) are ~15 MB
DEFAULT_ALIGNMENT = 32
SUPPORTED_VERSIONS = (2, 3)
_STREAM_PIECE = 64 << 10  # read size when skipping through a response that ignored Range

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


@dataclass
class RemoteModel:
    """A model read from URLs. ``model.shards`` hold the shard file names (relative paths), which
    are what a download would put in the local folder; ``urls`` are where they are, in order."""

    urls: list[str]
    model: GGUFModel
    bytes_fetched: int  # over all shards: what the headers cost to read
    file_sizes: list[int | None] = field(default_factory=list)


class RemoteNotFoundError(ModelFileError):
    """The server answered 404 for the URL. ``read_remote_model`` turns a missing shard (other
    than the one asked for) into MissingShardError."""


# --- byte sources ---------------------------------------------------------------------------


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


class _NoAuthAcrossHosts(HTTPRedirectHandler):
    """Follow redirects, but never carry a Hub token to another host (the Hub redirects file
    downloads to a CDN, whose signed URL needs no token)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = build_opener(_NoAuthAcrossHosts)


def _same_host(a: str, b: str) -> bool:
    return urlsplit(a).netloc == urlsplit(b).netloc


class HttpSource:
    """A file on an HTTP(S) server, read with ``Range: bytes=a-b`` requests.

    A server that ignores Range answers 200 with the whole file: then the response is kept
    open and read sequentially (the parser only reads forward), and closed when done, so only
    what the parser needs is transferred, plus what the network buffers held.
    """

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> None:
        self.label = url
        self.bytes_fetched = 0
        self.file_size: int | None = None
        self.requests = 0
        self._url = url  # after a redirect, the final URL (saves the redirect on later reads)
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._stream: HTTPResponse | None = None  # an open 200 response, when the server ignored Range
        self._stream_pos = 0

    def read(self, start: int, size: int) -> bytes:
        if self._stream is not None and self._stream_pos == start:
            return self._read_stream(size)
        self.close()
        own = self._headers if _same_host(self._url, self.label) else {
            k: v for k, v in self._headers.items() if k.lower() != "authorization"}
        headers = {**own, "Range": f"bytes={start}-{start + size - 1}", "Accept-Encoding": "identity"}
        self.requests += 1
        try:
            response = _OPENER.open(Request(self._url, headers=headers), timeout=self._timeout)
        except HTTPError as exc:
            exc.close()
            if exc.code == 416:  # range starts at or past the end of the file
                return b""
            raise self._http_error(exc.code, exc.reason) from exc
        except (URLError, OSError) as exc:
            raise ModelFileError(f"{self.label} could not be reached ({exc}).",
                                 "Check the network connection and the address.") from exc
        self._url = response.geturl()
        if response.status == 206:
            with response:
                # "bytes 0-65535/832832": check the start, take the total as the file size
                served, _, total = response.headers.get("Content-Range", "").partition("/")
                if not served.startswith(f"bytes {start}-"):
                    raise ModelFileError(f"{self.label}: the server sent {served or 'a range'} when "
                                         f"bytes {start}- were asked for.", "Try again later.")
                if total.isdigit():
                    self.file_size = int(total)
                data = response.read(size)
            self.bytes_fetched += len(data)
            return data
        # 200: the whole file from byte 0; skip to ``start`` and keep reading from there
        length = response.headers.get("Content-Length", "")
        if length.isdigit():
            self.file_size = int(length)
        self._stream, self._stream_pos = response, 0
        while self._stream_pos < start:
            if not self._read_stream(min(_STREAM_PIECE, start - self._stream_pos)):
                return b""
        return self._read_stream(size)

    def _read_stream(self, size: int) -> bytes:
        assert self._stream is not None
        data = self._stream.read(size)
        self._stream_pos += len(data)
        self.bytes_fetched += len(data)
        return data

    def _http_error(self, code: int, reason: object) -> Exception:
        if code == 404:
            return RemoteNotFoundError(f"{self.label} was not found on the server (HTTP 404).",
                                       "Check the address: the repository, the revision and the file name.")
        if code in (401, 403):
            return ModelFileError(f"{self.label} needs authorization (HTTP {code} {reason}).",
                                  "The repository may be gated or private: accept its terms on the "
                                  "Hub and sign in with a token.")
        return ModelFileError(f"{self.label} could not be read (HTTP {code} {reason}).",
                              "The server may be busy; try again later.")

    def close(self) -> None:
        """Close a response left open by a server that ignored Range."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


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


def _read_value(cur: _Cursor, vtype: GGUFValueType) -> object:
    if vtype == GGUFValueType.STRING:
        return cur.string()
    if vtype == GGUFValueType.ARRAY:
        # token lists are huge and not needed here: keep only their length, as read_model does
        return _skip_array(cur, _value_type(cur, cur.u32()), cur.u64())
    return cur.unpack(_SCALAR_FORMATS[vtype])[0]


def _skip_array(cur: _Cursor, item_type: GGUFValueType, count: int) -> int:
    """Skip an array; return its length (nested arrays count their items, as GGUFReader does)."""
    if item_type == GGUFValueType.STRING:
        for _ in range(count):
            cur.skip(cur.u64())
        return count
    if item_type == GGUFValueType.ARRAY:
        return sum(_skip_array(cur, _value_type(cur, cur.u32()), cur.u64()) for _ in range(count))
    cur.skip(count * struct.calcsize(_SCALAR_FORMATS[item_type]))
    return count


def _read_tensor_info(cur: _Cursor) -> tuple[TensorEntry, int]:
    name = cur.string()
    shape = [cur.u64() for _ in range(cur.u32())]
    raw_type, offset = cur.u32(), cur.u64()
    try:
        ggml_type = GGMLQuantizationType(raw_type)
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError):
        raise ModelFileError(f"{cur.source.label}: tensor {name} has ggml type {raw_type}, unknown to "
                             "this version of the gguf package.", "Update the gguf package.") from None
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
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = cur.string()
        vtype = _value_type(cur, cur.u32())
        value = _read_value(cur, vtype)
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
    data_end = max((data_offset + offset + t.n_bytes for t, offset in infos), default=data_offset)
    return GGUFHeader(version=version, metadata=metadata, tensors=tensors, alignment=alignment,
                      data_offset=data_offset, data_end=data_end,
                      header_bytes_fetched=source.bytes_fetched)


def read_header_file(fh: BinaryIO, label: str = "the file", **limits: int) -> GGUFHeader:
    """Parse the GGUF header of an open local file (binary mode) without reading tensor data."""
    return read_header(FileSource(fh, label), **limits)


# --- remote models --------------------------------------------------------------------------


def _file_name(url: str) -> str:
    return unquote(urlsplit(url).path.rpartition("/")[2])


def shard_urls(url: str) -> list[str]:
    """The URLs of every shard of the model at ``url`` (just ``url`` if it is not split).

    The shard number in ``...-00002-of-00005.gguf`` is replaced; a query string is kept.
    """
    parts = urlsplit(url)
    folder, _, quoted_name = parts.path.rpartition("/")
    match = SHARD_NAME.match(unquote(quoted_name))
    if not match:
        return [url]
    count, prefix = int(match.group("count")), match.group("prefix")
    return [urlunsplit(parts._replace(path=f"{folder}/{quote(name)}"))
            for name in shard_names(prefix, count)]


def read_remote_model(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0,
                      first_chunk: int = FIRST_CHUNK, max_header: int = MAX_HEADER_BYTES) -> RemoteModel:
    """Read the headers of every shard of the model at ``url`` over HTTP (no tensor data).

    ``url`` may name any shard of a split model; metadata comes from shard 1, tensors from all.
    ``headers`` go with every request (e.g. ``Authorization: Bearer <token>`` for gated repos).
    Raises ModelFileError (not found, not a GGUF, damaged, header too large, unreachable) or
    MissingShardError (another shard of a split model is not on the server).
    """
    urls = shard_urls(url)
    headers_read: list[GGUFHeader] = []
    missing: list[str] = []
    sizes: list[int | None] = []
    fetched = 0
    for shard_url in urls:
        source = HttpSource(shard_url, headers, timeout)
        try:
            headers_read.append(read_header(source, first_chunk=first_chunk, max_header=max_header))
        except RemoteNotFoundError:
            if _file_name(shard_url) == _file_name(url):  # the file asked for, not another shard
                raise
            missing.append(shard_url)
            continue
        finally:
            source.close()
            fetched += source.bytes_fetched
        sizes.append(source.file_size)
        _check_size(headers_read[-1], source)
    if missing:
        names = ", ".join(_file_name(u) for u in missing)
        raise MissingShardError(f"{len(missing)} of {len(urls)} shards are missing on the server: {names}",
                                f"The model is incomplete at {urls[0].rpartition('/')[0]}; "
                                "pick another upload of it.")
    model = GGUFModel(shards=[Path(_file_name(u)) for u in urls], metadata=headers_read[0].metadata)
    for index, header in enumerate(headers_read):
        for tensor in header.tensors:
            tensor.shard = index
            model.tensors.append(tensor)
    return RemoteModel(urls=urls, model=model, bytes_fetched=fetched, file_sizes=sizes)


def _check_size(header: GGUFHeader, source: HttpSource) -> None:
    if source.file_size is not None and header.data_end > source.file_size:
        raise ModelFileError(
            f"{source.label} is truncated: it has {source.file_size:,} bytes, its tensors need "
            f"{header.data_end:,}.",
            "The upload is incomplete; pick another upload of the model.",
        )
