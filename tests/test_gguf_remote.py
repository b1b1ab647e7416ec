"""Reading a model's headers from a web server, as the Hub page does before a download: a real
HTTP server on 127.0.0.1 serves the synthetic models, with or without Range support."""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gguf import GGUFReader, GGUFValueType

from app.errors import MissingShardError, ModelFileError
from app.gguf.header import read_header_file
from app.gguf.info import GGUFModel, TensorEntry, read_model
from app.gguf.remote import read_remote_model, shard_urls

RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class FileServer:
    """Serves the files of ``root``; counts the body bytes it sent."""

    root: Path
    base_url: str = ""
    ignore_range: bool = False
    bytes_sent: int = 0
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, name: str) -> str:
        return f"{self.base_url}/models/{name}"

    def count(self, n: int) -> None:
        with self.lock:
            self.bytes_sent += n


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            super().setup()
            # a small send buffer, so that a client closing early stops the server soon
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            server.requests.append(self.headers.get("Range", "(no range)"))
            path = server.root / self.path.removeprefix("/models/")
            if not path.is_file():
                self.send_error(404)
                return
            size = path.stat().st_size
            start, end = 0, size - 1
            match = RANGE.match(self.headers.get("Range", ""))
            if match and not server.ignore_range:
                start = int(match.group(1))
                end = min(int(match.group(2) or size - 1), size - 1)
                if start >= size:
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            with path.open("rb") as fh:
                fh.seek(start)
                left = end - start + 1
                try:
                    while left > 0:
                        piece = fh.read(min(left, 64 << 10))
                        # counted before it goes out: the client may read it and the test
                        # check the count before this thread runs again
                        server.count(len(piece))
                        self.wfile.write(piece)
                        left -= len(piece)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client had what it needed and hung up

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    state = FileServer(root=tmp_path / "served")
    state.root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _serve(server: FileServer, *paths: Path) -> None:
    for path in paths:
        shutil.copy(path, server.root / path.name)


def assert_same_model(remote: GGUFModel, local: GGUFModel) -> None:
    assert remote.metadata == local.metadata
    assert [type(v) for v in remote.metadata.values()] == [type(v) for v in local.metadata.values()]
    assert remote.tensors == local.tensors  # name, shape, type name, n_bytes, shard
    assert [s.name for s in remote.shards] == [s.name for s in local.shards]
    assert remote.name == local.name and remote.n_expert == local.n_expert


# --- the parser on local files --------------------------------------------------------------


def gguf_package_view(shard: Path, index: int) -> tuple[dict[str, object], list[TensorEntry]]:
    """A shard's metadata (arrays as their length) and tensors as the ``gguf`` package's own
    reader sees them: an independent parser to hold ours against."""
    reader = GGUFReader(shard, "r")
    metadata: dict[str, object] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):  # the reader's own entries for the file's preamble
            continue
        metadata[key] = len(fld.data) if fld.types[0] == GGUFValueType.ARRAY else fld.contents()
    tensors = [TensorEntry(name=t.name, shape=[int(d) for d in t.shape], type_name=t.tensor_type.name,
                           n_bytes=int(t.n_bytes), shard=index) for t in reader.tensors]
    return metadata, tensors


def test_local_header_agrees_with_the_gguf_package(tiny_moe_gguf: Path) -> None:
    metadata, tensors = gguf_package_view(tiny_moe_gguf, 0)
    with tiny_moe_gguf.open("rb") as fh:
        header = read_header_file(fh, tiny_moe_gguf.name, first_chunk=1024)
    assert header.version == 3 and header.alignment == 32
    assert header.metadata == metadata
    assert [type(v) for v in header.metadata.values()] == [type(v) for v in metadata.values()]
    assert header.metadata["tokenizer.ggml.tokens"] == 512  # arrays are replaced by their length
    assert header.tensors == tensors
    model = read_model(tiny_moe_gguf)  # the same parser, for a local model
    assert (model.metadata, model.tensors) == (metadata, tensors)
    assert header.data_end == tiny_moe_gguf.stat().st_size
    # only the header was read, in doublings from 1 KiB: at most twice its size
    assert header.data_offset < header.header_bytes_fetched <= 2 * header.data_offset


def test_local_headers_of_every_shard_agree_with_the_gguf_package(split_moe_gguf: list[Path]) -> None:
    local = read_model(split_moe_gguf[0])
    tensors = []
    for index, shard in enumerate(split_moe_gguf):
        metadata, shard_tensors = gguf_package_view(shard, index)
        with shard.open("rb") as fh:
            header = read_header_file(fh, shard.name)
        if index == 0:
            assert header.metadata == local.metadata == metadata
        assert header.metadata["split.no"] == index
        tensors += shard_tensors
    assert tensors == local.tensors


def test_local_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("just some notes")
    with path.open("rb") as fh, pytest.raises(ModelFileError, match="notes.gguf is not a GGUF"):
        read_header_file(fh, path.name)


def test_truncated_header(tmp_path: Path, tiny_moe_gguf: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_moe_gguf.read_bytes()[:5000])
    with path.open("rb") as fh, pytest.raises(ModelFileError, match="ends inside its GGUF header"):
        read_header_file(fh, path.name)


# --- over HTTP ------------------------------------------------------------------------------


def test_remote_tiny_model_reads_only_its_header(file_server: FileServer, tiny_moe_gguf: Path) -> None:
    _serve(file_server, tiny_moe_gguf)
    remote = read_remote_model(file_server.url(tiny_moe_gguf.name))

    assert_same_model(remote.model, read_model(tiny_moe_gguf))
    assert remote.urls == [file_server.url(tiny_moe_gguf.name)]
    size = tiny_moe_gguf.stat().st_size
    assert remote.file_sizes == [size]
    assert remote.bytes_fetched == file_server.bytes_sent
    assert remote.bytes_fetched <= 64 << 10 < size // 10  # one first chunk: the 16 KB header
    assert file_server.requests == ["bytes=0-65535"]


def test_remote_header_grows_by_doubling(file_server: FileServer, tiny_moe_gguf: Path) -> None:
    _serve(file_server, tiny_moe_gguf)
    remote = read_remote_model(file_server.url(tiny_moe_gguf.name), first_chunk=1024)
    assert_same_model(remote.model, read_model(tiny_moe_gguf))
    assert file_server.requests[:3] == ["bytes=0-1023", "bytes=1024-2047", "bytes=2048-4095"]
    assert remote.bytes_fetched <= 32 << 10  # a 16 KB header, fetched to the next power of two


def test_remote_split_model_from_any_shard(file_server: FileServer, split_moe_gguf: list[Path]) -> None:
    _serve(file_server, *split_moe_gguf)
    local = read_model(split_moe_gguf[0])
    remote = read_remote_model(file_server.url(split_moe_gguf[1].name))  # the user pasted shard 2

    assert_same_model(remote.model, local)
    assert remote.urls == [file_server.url(p.name) for p in split_moe_gguf]
    assert {t.shard for t in remote.model.tensors} == {0, 1, 2}
    total = sum(p.stat().st_size for p in split_moe_gguf)
    assert remote.bytes_fetched == file_server.bytes_sent < total // 4


def test_server_that_ignores_range(file_server: FileServer, tiny_moe_gguf: Path) -> None:
    """A 200 answer carries the whole file: the reader reads what it needs and hangs up."""
    file_server.ignore_range = True
    big = file_server.root / "big-moe.gguf"
    shutil.copy(tiny_moe_gguf, big)
    with big.open("r+b") as fh:  # 256 MiB of (sparse) padding after the tensor data
        fh.truncate(256 << 20)
    remote = read_remote_model(file_server.url(big.name), first_chunk=4096)

    assert remote.model.tensors == read_model(tiny_moe_gguf).tensors
    assert remote.file_sizes == [256 << 20]
    assert remote.bytes_fetched <= 32 << 10
    assert file_server.requests[0] == "bytes=0-4095"
    assert len(file_server.requests) == 1  # later chunks came from the same open response
    assert file_server.bytes_sent < 64 << 20  # the server stopped long before the end


def test_split_model_with_a_server_that_ignores_range(file_server: FileServer,
                                                      split_moe_gguf: list[Path]) -> None:
    file_server.ignore_range = True
    _serve(file_server, *split_moe_gguf)
    remote = read_remote_model(file_server.url(split_moe_gguf[0].name))
    assert_same_model(remote.model, read_model(split_moe_gguf[0]))


def test_remote_file_that_is_not_gguf(file_server: FileServer) -> None:
    (file_server.root / "README.md").write_text("# A model card, not a model\n")
    url = file_server.url("README.md")
    with pytest.raises(ModelFileError, match=re.escape(f"{url} is not a GGUF model")):
        read_remote_model(url)


def test_remote_file_not_found(file_server: FileServer) -> None:
    url = file_server.url("no-such-model.gguf")
    with pytest.raises(ModelFileError, match=re.escape(f"{url} was not found on the server (HTTP 404)")):
        read_remote_model(url)


def test_remote_split_model_with_a_missing_shard(file_server: FileServer,
                                                 split_moe_gguf: list[Path]) -> None:
    _serve(file_server, split_moe_gguf[0], split_moe_gguf[2])
    with pytest.raises(MissingShardError, match="1 of 3 shards are missing.*tiny-moe-00002-of-00003"):
        read_remote_model(file_server.url(split_moe_gguf[0].name))


def test_header_larger_than_the_cap(file_server: FileServer, tiny_moe_gguf: Path) -> None:
    _serve(file_server, tiny_moe_gguf)
    with pytest.raises(ModelFileError, match="header of .*tiny-moe.gguf is larger than 8,192 bytes"):
        read_remote_model(file_server.url(tiny_moe_gguf.name), first_chunk=1024, max_header=8192)
    assert file_server.bytes_sent <= 8192


def test_shard_urls_keep_the_query_string() -> None:
    url = "https://huggingface.co/org/repo/resolve/main/Q4_K_M/m-00002-of-00003.gguf?download=true"
    assert shard_urls(url) == [
        f"https://huggingface.co/org/repo/resolve/main/Q4_K_M/m-0000{i}-of-00003.gguf?download=true"
        for i in (1, 2, 3)
    ]
    assert shard_urls("https://example.org/m.gguf") == ["https://example.org/m.gguf"]


def test_a_token_never_follows_a_redirect_to_another_host(tiny_moe_gguf: Path) -> None:
    """The Hub redirects downloads to a CDN: the Authorization header must stay behind."""
    import http.server
    import threading

    seen: list[str | None] = []
    data = tiny_moe_gguf.read_bytes()

    class Cdn(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            start, end = (int(x) for x in self.headers["Range"].split("=")[1].split("-"))
            body = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cdn)

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{cdn.server_port}/signed/tiny.gguf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    for server in (cdn, hub):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = read_remote_model(f"http://127.0.0.1:{hub.server_port}/tiny.gguf",
                                   headers={"Authorization": "Bearer hf_secret"}, first_chunk=1024)
    finally:
        cdn.shutdown()
        hub.shutdown()
    assert remote.model.n_expert == 8
    assert seen[0] == "Bearer hf_secret"  # the Hub itself gets the token
    assert len(seen) > 2 and all(value is None for value in seen[1:])  # the CDN never does
