"""What a model on a web server is, read from its GGUF headers alone.

Before downloading 400 GB, the advisor wants the same ``GGUFModel`` that ``read_model()`` gives
for a local file: metadata, every tensor's shape, type and size. A GGUF header is a few MB at
the start of each shard, so each shard's header is parsed (``app.gguf.header``) from its URL
with HTTP Range requests (``app.gguf.http_range``), and the shards are put together into one model.
Every shard's tensor table is needed (which tensors are experts, and their sizes, decide the
plan), so the shards of a split set are read side by side: a 30-shard BF16 set costs a few round
trips instead of 30.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from app.errors import MissingShardError, ModelFileError
from app.gguf.header import FIRST_CHUNK, MAX_HEADER_BYTES, GGUFHeader, read_header
from app.gguf.http_range import HttpSource, RemoteNotFoundError
from app.gguf.info import GGUFModel, shard_names, split_numbers
from app.gguf.validate import check_model

PARALLEL_SHARDS = 8  # shard headers read at once (each is a redirect and one or two ranges)


@dataclass
class RemoteModel:
    """A model read from URLs. ``model.shards`` hold the shard file names (relative paths), which
    are what a download would put in the local folder; ``urls`` are where they are, in order."""

    urls: list[str]
    model: GGUFModel
    bytes_fetched: int  # over all shards: what the headers cost to read
    file_sizes: list[int | None] = field(default_factory=list)


@dataclass
class _ShardRead:
    url: str
    header: GGUFHeader | None  # None: the server does not have this shard
    file_size: int | None
    bytes_fetched: int


def _file_name(url: str) -> str:
    return unquote(urlsplit(url).path.rpartition("/")[2])


def shard_urls(url: str) -> list[str]:
    """The URLs of every shard of the model at ``url`` (just ``url`` if it is not split).

    The shard number in ``...-00002-of-00005.gguf`` is replaced; a query string is kept.
    """
    parts = urlsplit(url)
    folder, _, quoted_name = parts.path.rpartition("/")
    numbers = split_numbers(unquote(quoted_name))  # ModelFileError: shard 4 of 3
    if numbers is None:
        return [url]
    prefix, _, count = numbers
    return [urlunsplit(parts._replace(path=f"{folder}/{quote(name)}"))
            for name in shard_names(prefix, count)]


def read_remote_model(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0,
                      first_chunk: int = FIRST_CHUNK, max_header: int = MAX_HEADER_BYTES) -> RemoteModel:
    """Read the headers of every shard of the model at ``url`` over HTTP (no tensor data).

    ``url`` may name any shard of a split model; metadata comes from shard 1, tensors from all.
    ``headers`` go with every request (e.g. ``Authorization: Bearer <token>`` for gated repos).
    Raises ModelFileError (not found, not a GGUF, damaged, header too large, unreachable, a
    value llama.cpp cannot load: ``app.gguf.validate``) or MissingShardError (another shard of a
    split model is not on the server).
    """
    urls = shard_urls(url)

    def read(shard_url: str) -> _ShardRead:
        source = HttpSource(shard_url, headers, timeout)
        try:
            header = read_header(source, first_chunk=first_chunk, max_header=max_header)
        except RemoteNotFoundError:
            if _file_name(shard_url) == _file_name(url):  # the file asked for, not another shard
                raise
            return _ShardRead(shard_url, None, None, source.bytes_fetched)
        finally:
            source.close()
        _check_size(header, source)
        return _ShardRead(shard_url, header, source.file_size, source.bytes_fetched)

    with ThreadPoolExecutor(min(len(urls), PARALLEL_SHARDS), thread_name_prefix="gguf-remote") as pool:
        reads = list(pool.map(read, urls))  # in shard order: the first shard's error is raised first
    headers_read = [r.header for r in reads if r.header is not None]
    missing = [r.url for r in reads if r.header is None]
    sizes = [r.file_size for r in reads if r.header is not None]
    fetched = sum(r.bytes_fetched for r in reads)
    if missing:
        names = ", ".join(_file_name(u) for u in missing)
        raise MissingShardError(f"{len(missing)} of {len(urls)} shards are missing on the server: {names}",
                                f"The model is incomplete at {urls[0].rpartition('/')[0]}; "
                                "pick another upload of it.")
    model = GGUFModel(shards=[Path(_file_name(u)) for u in urls], metadata=headers_read[0].metadata,
                      arrays=headers_read[0].arrays)
    for index, header in enumerate(headers_read):
        for tensor in header.tensors:
            tensor.shard = index
            model.tensors.append(tensor)
    check_model(model, [h.metadata for h in headers_read], [len(h.tensors) for h in headers_read],
                urls)
    return RemoteModel(urls=urls, model=model, bytes_fetched=fetched, file_sizes=sizes)


def _check_size(header: GGUFHeader, source: HttpSource) -> None:
    if source.file_size is not None and header.data_end > source.file_size:
        raise ModelFileError(
            f"{source.label} is truncated: it has {source.file_size:,} bytes, its tensors need "
            f"{header.data_end:,}.",
            "The upload is incomplete; pick another upload of the model.",
        )
