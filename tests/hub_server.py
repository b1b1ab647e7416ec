"""A local Hugging Face Hub for tests: the real ``huggingface_hub`` client talks to it over HTTP.

Repos are defined in Python (``HubRepo``: path -> bytes or ``LargeFile``) and served on 127.0.0.1.
It answers the endpoints that huggingface_hub 2.x calls, with the fields and headers it reads:

- ``GET /api/models?search=&filter=&author=&sort=&limit=&expand=``  (``HfApi.list_models``)
- ``GET /api/models/{repo}[/revision/{rev}]?blobs=true``  (``HfApi.model_info(files_metadata=True)``):
  ``siblings`` with ``size``, ``blobId`` and ``lfs: {sha256, size, pointerSize}``
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=``  (``HfApi.list_repo_tree``):
  entries with ``type``, ``oid``, ``size``, ``path``, ``lfs: {oid: sha256, size, pointerSize}``
- ``POST /api/models/{repo}/paths-info/{rev}``  (``HfApi.get_paths_info``)
- ``GET /api/models/{repo}/auth-check``  (``HfApi.auth_check``)
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``  (``hf_hub_download``): ``X-Repo-Commit`` and ``ETag``;
  LFS files answer 302 with ``X-Linked-Etag``/``X-Linked-Size`` and a ``Location`` on another origin
  (``localhost`` instead of ``127.0.0.1``), as the Hub redirects to its CDN; the "CDN" serves
  ``GET|HEAD /__cdn__/{sha256}`` without auth, with ``Range`` (206 + ``Content-Range``, 416).

Errors as the Hub gives them, through ``X-Error-Code``: ``RepoNotFound`` (401 without a token, 404
with one, also for private repos the token cannot read), ``RevisionNotFound``, ``EntryNotFound`` (404),
``GatedRepo`` for gated files (401 without a token, 403 for a token not granted access). Like the
Hub, a gated repo's metadata and file list are public; only its files and auth-check need access.
Revisions are ``main`` and the repo's one commit sha. Only model repos; no uploads, no xet.

For download tests, ``LocalHub.drop_after`` and ``LocalHub.corrupt`` make a file's next GETs end early
or carry a wrong byte, ``LocalHub.bytes_per_s`` slows file bytes down (so a test can pause a download
midway; set it to None to go full speed again), and ``LocalHub.bytes_served`` counts the file bytes sent.
``LocalHub.latency_s`` delays every answer as a distant server would, and ``LocalHub.peak_in_flight`` is
the most requests it was answering at once.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
_CHUNK = 1 << 20
_SLICE = 1 << 14


@dataclass(frozen=True)
class LargeFile:
    """A file of ``size`` bytes never held in memory: ``head``, then byte i is ``pattern[i % len(pattern)]``.

    Pass ``sha256`` to declare one without hashing (listing-only tests with sizes in GB); ``head`` holds
    a real GGUF header in front of tensor data that is never read (the advisor's tests).
    """

    size: int
    pattern: bytes = b"GGUF"
    sha256: str | None = None
    head: bytes = b""

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes [start, end), in chunks."""
        if start < len(self.head):
            yield self.head[start:end]
            start = min(len(self.head), end)
        n = len(self.pattern)
        block = self.pattern * (_CHUNK // n + 2)
        while start < end:
            count = min(_CHUNK, end - start)
            offset = start % n
            yield block[offset : offset + count]
            start += count


@dataclass(frozen=True)
class _Blob:
    path: str
    content: bytes | LargeFile

    @cached_property
    def size(self) -> int:
        return self.content.size if isinstance(self.content, LargeFile) else len(self.content)

    @property
    def is_lfs(self) -> bool:
        return isinstance(self.content, LargeFile) or self.path.endswith(LFS_SUFFIXES)

    @cached_property
    def sha256(self) -> str:
        if isinstance(self.content, bytes):
            return hashlib.sha256(self.content).hexdigest()
        if self.content.sha256:
            return self.content.sha256
        digest = hashlib.sha256()
        for chunk in self.content.chunks(0, self.size):
            digest.update(chunk)
        return digest.hexdigest()

    @cached_property
    def pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @cached_property
    def git_oid(self) -> str:
        """Git's blob id: of the LFS pointer for LFS files, of the content otherwise."""
        data = self.pointer if self.is_lfs else self.content
        assert isinstance(data, bytes)
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        if isinstance(self.content, LargeFile):
            yield from self.content.chunks(start, end)
        else:
            yield self.content[start:end]

    def tree_entry(self) -> dict:
        entry: dict = {"type": "file", "oid": self.git_oid, "size": self.size, "path": self.path}
        if self.is_lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return entry


@dataclass
class HubRepo:
    """One model repo. ``tokens`` may read it when it is gated or private."""

    files: dict[str, bytes | LargeFile]
    gated: bool = False
    private: bool = False
    tokens: frozenset[str] = frozenset()
    downloads: int = 0
    likes: int = 0
    last_modified: str = "2025-01-01T00:00:00.000Z"
    tags: list[str] = field(default_factory=list)

    @cached_property
    def blobs(self) -> dict[str, _Blob]:
        return {path: _Blob(path, content) for path, content in sorted(self.files.items())}

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(json.dumps(sorted(self.files)).encode()).hexdigest()

    @cached_property
    def folders(self) -> list[str]:
        return sorted({path.rsplit("/", i)[0] for path in self.files for i in range(1, path.count("/") + 1)})

    def all_tags(self) -> list[str]:
        return self.tags + (["gguf"] if any(p.endswith(".gguf") for p in self.files) else [])


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class LocalHub:
    """The server; ``url`` is what to pass as ``endpoint=`` (or HF_ENDPOINT for a child process)."""

    def __init__(self, repos: dict[str, HubRepo] | None = None) -> None:
        self.repos: dict[str, HubRepo] = dict(repos or {})
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests that count calls
        # Faults for download tests, keyed by file path; each GET of the file's bytes uses one up.
        self.drop_after: dict[str, list[int]] = {}  # send this many bytes, then close the connection
        self.corrupt: dict[str, int] = {}  # this many more GETs serve the bytes with the first one flipped
        self.bytes_served = 0  # file bytes sent, over all GETs
        self.bytes_per_s: float | None = None  # throttle for file bytes (per connection); None: full speed
        self.latency_s = 0.0  # before every answer
        self.in_flight = self.peak_in_flight = 0  # requests being answered: now, and the most at once
        self._fault_lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn_url = f"http://localhost:{self.port}/__cdn__"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, repo_id: str, repo: HubRepo) -> HubRepo:
        self.repos[repo_id] = repo
        return repo

    # -- access rules --------------------------------------------------------------------------
    def repo_for(self, repo_id: str, token: str | None, *, files: bool) -> HubRepo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and token not in repo.tokens):
            raise HubError(401 if token is None else 404, "RepoNotFound", "Repository not found")
        if files and repo.gated and token not in repo.tokens:
            if token is None:
                raise HubError(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have "
                    "access to it and be authenticated to access it. Please log in.",
                )
            raise HubError(
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in "
                f"the authorized list. Visit {self.url}/{repo_id} to ask for access.",
            )
        return repo

    @staticmethod
    def check_revision(repo: HubRepo, revision: str) -> None:
        if revision not in ("main", repo.sha):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def blob_by_sha(self, sha256: str) -> _Blob | None:
        for repo in self.repos.values():
            for blob in repo.blobs.values():
                if blob.is_lfs and blob.sha256 == sha256:
                    return blob
        return None


def repo_of_files(files: dict[str, Path], **options: object) -> HubRepo:
    """A repo whose files are copies of real files (GGUF models written by the tests)."""
    return HubRepo({path: source.read_bytes() for path, source in files.items()}, **options)  # type: ignore[arg-type]


class MemoryKeyring(KeyringBackend):
    """A keyring that keeps passwords in this process: the real ``keyring`` API, no system service."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.passwords.pop((service, username), None) is None:
            raise PasswordDeleteError("no such password")


@pytest.fixture
def memory_keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryKeyring]:
    """An in-memory keyring as the system keyring, and no HF_TOKEN in the environment."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """An empty local Hub, running; add repos with ``local_hub.add(repo_id, HubRepo(...))``."""
    with LocalHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)  # for child processes; in-process code passes endpoint=
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield hub


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (a cancelled or paused download) is normal here; others are not."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    hub: LocalHub

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- routing -------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        self.hub.requests.append((method, split.path))
        auth = self.headers.get("Authorization", "")
        self.token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        with self.hub._fault_lock:
            self.hub.in_flight += 1
            self.hub.peak_in_flight = max(self.hub.peak_in_flight, self.hub.in_flight)
        time.sleep(self.hub.latency_s)
        try:
            if parts[:1] == ["__cdn__"] and len(parts) == 2 and method in ("GET", "HEAD"):
                return self._cdn(parts[1], method)
            if parts[:2] == ["api", "models"] and method in ("GET", "POST"):
                return self._api(parts[2:], method)
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), method)
            raise HubError(404, None, f"Not found: {split.path}")
        except HubError as error:
            headers = {"X-Error-Message": error.message, **error.headers}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._send(error.status, json.dumps({"error": error.message}).encode(), headers, method)
        finally:
            with self.hub._fault_lock:
                self.hub.in_flight -= 1

    def _api(self, rest: list[str], method: str) -> None:
        if not rest:
            return self._json(self._search())
        repo_id, action, args = "/".join(rest[:2]), rest[2] if len(rest) > 2 else "", rest[3:]
        if action in ("", "revision") and method == "GET":
            repo = self.hub.repo_for(repo_id, self.token, files=False)
            self.hub.check_revision(repo, args[0] if args else "main")
            return self._json(self._info(repo_id, repo, blobs=self._flag("blobs")))
        if action == "tree" and method == "GET" and args:
            repo = self.hub.repo_for(repo_id, self.token, files=False)
            self.hub.check_revision(repo, args[0])
            return self._json(self._tree(repo, "/".join(args[1:]), self._flag("recursive")))
        if action == "paths-info" and method == "POST" and args:
            repo = self.hub.repo_for(repo_id, self.token, files=False)
            self.hub.check_revision(repo, args[0])
            length = int(self.headers.get("Content-Length", 0))
            paths = parse_qs(self.rfile.read(length).decode()).get("paths", [])
            return self._json(self._paths_info(repo, paths))
        if action == "auth-check" and method == "GET":
            self.hub.repo_for(repo_id, self.token, files=True)
            return self._json({"access": "granted"})
        raise HubError(404, None, f"Not found: {self.path}")

    def _flag(self, name: str) -> bool:
        return self.query.get(name, [""])[-1].lower() == "true"

    # -- API bodies ----------------------------------------------------------------------------
    def _search(self) -> list[dict]:
        q = {key: values[-1] for key, values in self.query.items()}
        wanted = set(self.query.get("filter", []))
        hits = [
            (repo_id, repo)
            for repo_id, repo in self.hub.repos.items()
            if not repo.private
            and q.get("search", "").lower() in repo_id.lower()
            and wanted <= set(repo.all_tags())
            and repo_id.startswith(q.get("author", "") + "/" if "author" in q else "")
        ]
        sort_key = {"downloads": "downloads", "likes": "likes", "lastModified": "last_modified"}.get(
            q.get("sort")
        )
        if sort_key:
            hits.sort(key=lambda hit: getattr(hit[1], sort_key), reverse=True)
        limit = int(q.get("limit", 1000))
        expand = self.query.get("expand")
        return [self._summary(repo_id, repo, expand) for repo_id, repo in hits[:limit]]

    def _summary(self, repo_id: str, repo: HubRepo, expand: list[str] | None = None) -> dict:
        full = {
            "_id": repo.sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": repo.sha,
            "lastModified": repo.last_modified,
            "createdAt": repo.last_modified,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "tags": repo.all_tags(),
            "library_name": None,
        }
        if expand:  # the Hub answers only the expanded properties (and the ids)
            return {key: value for key, value in full.items() if key in ("_id", "id", *expand)}
        return {key: full[key] for key in ("_id", "id", "modelId", "likes", "downloads", "tags", "private")}

    def _info(self, repo_id: str, repo: HubRepo, *, blobs: bool) -> dict:
        siblings = []
        for blob in repo.blobs.values():
            sibling: dict = {"rfilename": blob.path}
            if blobs:
                sibling.update(size=blob.size, blobId=blob.git_oid)
                if blob.is_lfs:
                    sibling["lfs"] = {
                        "sha256": blob.sha256,
                        "size": blob.size,
                        "pointerSize": len(blob.pointer),
                    }
            siblings.append(sibling)
        info = self._summary(repo_id, repo, list(_ALL))
        return {
            **info,
            "modelId": repo_id,
            "siblings": siblings,
            "usedStorage": sum(b.size for b in repo.blobs.values()),
        }

    def _tree(self, repo: HubRepo, folder: str, recursive: bool) -> list[dict]:
        if folder and folder not in repo.folders:
            raise HubError(404, "EntryNotFound", f'{folder} does not exist on "main"')
        prefix = folder + "/" if folder else ""

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        dirs = [_folder_entry(path) for path in repo.folders if listed(path)]
        return dirs + [blob.tree_entry() for path, blob in repo.blobs.items() if listed(path)]

    def _paths_info(self, repo: HubRepo, paths: list[str]) -> list[dict]:
        found = [repo.blobs[p].tree_entry() for p in paths if p in repo.blobs]
        return found + [_folder_entry(p) for p in paths if p in repo.folders]

    # -- files ---------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str, path: str, method: str) -> None:
        repo = self.hub.repo_for(repo_id, self.token, files=True)
        self.hub.check_revision(repo, revision)
        commit = {"X-Repo-Commit": repo.sha}
        blob = repo.blobs.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f'{path} does not exist on "{revision}"', commit)
        if blob.is_lfs:
            headers = {
                **commit,
                "ETag": f'"{blob.git_oid}"',
                "X-Linked-Etag": f'"{blob.sha256}"',
                "X-Linked-Size": str(blob.size),
                "Location": f"{self.hub.cdn_url}/{blob.sha256}",
            }
            return self._send(302, b"", headers, method)
        self._send_blob(blob, method, {**commit, "ETag": f'"{blob.git_oid}"'})

    def _cdn(self, sha256: str, method: str) -> None:
        blob = self.hub.blob_by_sha(sha256)
        if blob is None:
            raise HubError(404, None, "No such blob")
        self._send_blob(blob, method, {"ETag": f'"{blob.sha256}"'})

    def _send_blob(self, blob: _Blob, method: str, headers: dict[str, str]) -> None:
        start, end = 0, blob.size
        status = 200
        if (header := self.headers.get("Range")) is not None:
            status = 206
            first, _, last = header.removeprefix("bytes=").partition("-")
            if first:
                start, end = int(first), min(int(last) + 1, blob.size) if last else blob.size
            else:  # suffix range: the last N bytes
                start = max(blob.size - int(last), 0)
            if start >= blob.size or start >= end:
                raise HubError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{blob.size}"})
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        self.send_response(status)
        for key, value in {**headers, "Accept-Ranges": "bytes", "Content-Length": str(end - start)}.items():
            self.send_header(key, value)
        self.end_headers()
        if method == "GET":
            self._write_blob(blob, start, end)

    def _write_blob(self, blob: _Blob, start: int, end: int) -> None:
        with self.hub._fault_lock:
            drops = self.hub.drop_after.get(blob.path)
            limit = drops.pop(0) if drops else None
            corrupt = self.hub.corrupt.get(blob.path, 0) > 0
            if corrupt:
                self.hub.corrupt[blob.path] -= 1
        sent = 0
        for chunk in self._throttled(blob.chunks(start, end)):
            if corrupt and sent == 0:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            if limit is not None:
                chunk = chunk[: limit - sent]
            self.wfile.write(chunk)
            sent += len(chunk)
            with self.hub._fault_lock:
                self.hub.bytes_served += len(chunk)
            if limit is not None and sent >= limit:
                self.wfile.flush()
                self.close_connection = True  # a dropped connection: fewer bytes than Content-Length
                return

    def _throttled(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The chunks, in slices of 16 KiB at ``hub.bytes_per_s`` while that is set."""
        for chunk in chunks:
            for offset in range(0, len(chunk), _SLICE):
                rate = self.hub.bytes_per_s
                if rate is None:
                    yield chunk[offset:]
                    break
                piece = chunk[offset : offset + _SLICE]
                time.sleep(len(piece) / rate)
                yield piece

    def _json(self, body: object) -> None:
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, "GET")

    def _send(self, status: int, body: bytes, headers: dict[str, str], method: str) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)


_ALL = (
    "author",
    "sha",
    "lastModified",
    "createdAt",
    "private",
    "gated",
    "disabled",
    "downloads",
    "likes",
    "tags",
    "library_name",
)


def _folder_entry(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path}
