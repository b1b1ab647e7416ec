"""A file on an HTTP(S) server as a byte source for the GGUF header parser (``app.gguf.header``):
read with ``Range`` requests, so only the header of a 400 GB model crosses the network.

Errors are ModelFileError in words with the fix; a 404 is RemoteNotFoundError, so that a
caller reading a split model can tell a missing shard from a server that cannot be reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from http.client import HTTPResponse
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from app.errors import ModelFileError

_STREAM_PIECE = 64 << 10  # read size when skipping through a response that ignored Range


class RemoteNotFoundError(ModelFileError):
    """The server answered 404 for the URL. ``read_remote_model`` turns a missing shard (other
    than the one asked for) into MissingShardError."""


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
