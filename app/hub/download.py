"""Download a quant's shards from the Hub: parallel, resumable, verified, cancellable.

Plain Python (no Qt): call ``download_quant`` from a worker thread or the CLI. Each shard is written to
``<name>.part`` while its sha256 is computed; an interrupted download (dropped connection, cancel,
restart of the app) continues from the ``.part`` size with an HTTP ``Range`` request. Only when every
shard is complete and verified are the ``.part`` files renamed and the ``moedesk-download.json`` marker
written, so a library can tell a complete model from a partial one.

Transport: huggingface_hub's own HTTP client (``get_session()``, httpx), so proxies, user agent and
``hf_raise_for_status``'s error mapping (gated, not found) are the Hub client's. Redirects are followed
here rather than by httpx, to make the rule visible: the token goes to the Hub only, never to the CDN
host a resolve URL redirects to; the ``Range`` header goes to both.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx2
from huggingface_hub import errors as hf_errors
from huggingface_hub import hf_hub_url
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from app.hub.errors import HubError
from app.hub.folder import (  # noqa: F401 - MARKER_NAME and read_marker are part of this module's API
    MARKER_NAME,
    already_complete,
    bytes_on_disk,
    mark_complete,
    part,
    read_marker,
    repo_folder,
    target,
)
from app.hub.quants import Quant, QuantFile
from app.hub.repo import REQUEST_TIMEOUT_S, hub_errors
from app.units import file_size

CHUNK_SIZE = 1 << 20
PROGRESS_INTERVAL_S = 0.1  # at most 10 progress calls a second
_SPEED_WINDOW_S = 5.0
_MAX_REDIRECTS = 5


class DiskFullError(HubError):
    """Not enough free space for the bytes still to download."""

    def __init__(self, folder: Path, needed: int, free: int) -> None:
        super().__init__(
            f"Not enough disk space in {folder}: the download needs {file_size(needed)} more, "
            f"{file_size(free)} is free. Free {file_size(needed - free)} or choose a folder on another disk."
        )
        self.folder, self.needed, self.free = folder, needed, free


class DiskWriteError(HubError):
    """Writing the download failed: the disk filled up after the space check (another program
    took the space), or the folder is not writable. The bytes written so far are kept."""

    def __init__(self, folder: Path, error: OSError) -> None:
        full = error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        what = "the disk is full" if full else (error.strerror or str(error))
        on = f" (writing {error.filename})" if error.filename else ""
        fix = ("Free some space, or choose a folder on another disk" if full
               else "Check that the folder is writable by you and the disk is healthy")
        super().__init__(
            f"Cannot write the download into {folder}: {what}{on}. {fix}, then start the same "
            "download again: it continues from the bytes already written."
        )
        self.folder, self.error = folder, error


class ChecksumError(HubError):
    """A shard's sha256 differed from the Hub's, twice: it was deleted, the other shards are kept."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"'{path}' was downloaded twice and its sha256 differs from the Hub's both times "
            f"(expected {expected}, got {actual}); it was deleted. Try again later, or from another "
            "network or proxy: the other shards are kept and will not be downloaded again."
        )
        self.path, self.expected, self.actual = path, expected, actual


class DownloadCancelled(HubError):
    """The download was cancelled; its ``.part`` files stay for a later call to resume."""

    def __init__(self, folder: Path) -> None:
        super().__init__(
            f"Download cancelled. The partial files in {folder} are kept: start the same download "
            "again to continue where it stopped, or delete the folder to free the space."
        )
        self.folder = folder


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes of the whole quant: ``done`` includes bytes already on disk from an earlier attempt."""

    done: int
    total: int
    bytes_per_s: float  # over the last few seconds, bytes fetched in this call only
    eta_s: float | None  # None until a speed is known


ProgressCallback = Callable[[DownloadProgress], None]


def download_quant(
    repo_id: str,
    quant: Quant,
    dest_dir: Path,
    token: str | None = None,
    endpoint: str | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    max_workers: int = 4,
    *,
    max_retries: int = 5,
    retry_delay_s: float = 1.0,
    free_space: Callable[[Path], int] | None = None,
) -> list[Path]:
    """Download every shard of ``quant`` into ``dest_dir/<owner>--<model>/<quant path>``; return the paths.

    Raises ``DiskFullError`` before writing anything, ``DownloadCancelled`` when ``cancel`` is set,
    ``ChecksumError`` for a shard corrupt twice, ``GatedRepoError``/``RepoNotFoundError``/``HubError``
    as the Hub answers. Connection errors and HTTP 5xx/429 are retried ``max_retries`` times with
    exponential backoff from ``retry_delay_s``; each retry resumes from the bytes already written.
    ``free_space(folder)`` defaults to ``shutil.disk_usage(folder).free``. A write that fails
    (the disk filled up after all, a folder not writable) raises ``DiskWriteError``.
    """
    root = repo_folder(dest_dir, repo_id)
    try:
        return _download(repo_id, quant, root, token, endpoint, on_progress, cancel, max_workers,
                         max_retries, retry_delay_s, free_space)
    except OSError as error:
        if isinstance(error, httpx2.HTTPError):  # the Hub's HTTP errors are OSErrors too
            raise
        raise DiskWriteError(root, error) from error


def _download(repo_id: str, quant: Quant, root: Path, token: str | None, endpoint: str | None,
              on_progress: ProgressCallback | None, cancel: threading.Event | None,
              max_workers: int, max_retries: int, retry_delay_s: float,
              free_space: Callable[[Path], int] | None) -> list[Path]:
    if not quant.complete:
        raise HubError(
            f"'{repo_id}' lacks shard(s) {list(quant.missing_shards)} of {quant.name}: llama.cpp cannot "
            "load it. Choose another quant, or ask the repo's publisher to upload the missing shards."
        )
    targets = [target(root, file) for file in quant.files]
    if already_complete(root, quant, targets):
        return targets

    on_disk = [bytes_on_disk(file, shard) for file, shard in zip(quant.files, targets, strict=True)]
    needed = quant.total_size - sum(on_disk)
    free = (free_space or _disk_free)(_existing_parent(root))
    if needed > free:
        raise DiskFullError(root, needed, free)

    job = _Job(
        repo_id=repo_id,
        endpoint=endpoint,
        headers=build_hf_headers(token=token),
        token=token,
        cancel=cancel or threading.Event(),
        progress=_Progress(quant.total_size, sum(on_disk), on_progress),
        max_retries=max_retries,
        retry_delay_s=retry_delay_s,
    )
    with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="hub-download") as pool:
        futures = [pool.submit(job.fetch_verified, f, t) for f, t in zip(quant.files, targets, strict=True)]
    errors = [error for future in futures if (error := future.exception()) is not None]
    if job.cancel.is_set() or any(isinstance(e, DownloadCancelled) for e in errors):
        raise DownloadCancelled(root)
    if errors:
        raise errors[0]

    for shard in targets:
        if part(shard).exists():
            part(shard).replace(shard)
    mark_complete(root, repo_id, quant)
    job.progress.finish()
    return targets


@dataclass
class _Job:
    """What the shard workers share."""

    repo_id: str
    endpoint: str | None
    headers: dict[str, str]
    token: str | None
    cancel: threading.Event
    progress: _Progress
    max_retries: int
    retry_delay_s: float

    def fetch_verified(self, file: QuantFile, shard: Path) -> None:
        """Fetch one shard into its ``.part`` (or accept a final file there); fetch again once if corrupt."""
        if self.cancel.is_set():
            raise DownloadCancelled(shard.parent)
        if shard.exists() and shard.stat().st_size == file.size:
            actual = _hash_file(shard, self.cancel)
            if file.sha256 is None or actual == file.sha256:
                return
            shard.unlink()
            self.progress.add(-file.size)
        for attempt in (1, 2):
            actual = self._fetch_with_retries(file, part(shard))
            if file.sha256 is None or actual == file.sha256:
                return
            # A corrupt shard: throw it away alone; the other shards' bytes are good.
            self.progress.add(-part(shard).stat().st_size)
            part(shard).unlink()
            if attempt == 2:
                raise ChecksumError(file.path, file.sha256, actual)

    def _fetch_with_retries(self, file: QuantFile, part: Path) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                return self._fetch(file, part)
            except (httpx2.TransportError, hf_errors.HfHubHTTPError) as error:
                if attempt == self.max_retries or not _transient(error):
                    with hub_errors(self.endpoint or "https://huggingface.co", self.repo_id, self.token):
                        raise
                if self.cancel.wait(self.retry_delay_s * 2**attempt):
                    raise DownloadCancelled(part.parent) from error
        raise AssertionError("unreachable")

    def _fetch(self, file: QuantFile, part: Path) -> str:
        """Append the missing bytes to ``part``; return the sha256 of the whole file."""
        part.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        offset = _hash_into(part, digest, self.cancel) if part.exists() else 0
        if offset > file.size:  # not this file (the repo changed?): start over
            self.progress.add(-file.size)
            part.unlink()
            digest, offset = hashlib.sha256(), 0
        if offset == file.size:
            return digest.hexdigest()

        url = hf_hub_url(self.repo_id, file.path, endpoint=self.endpoint)
        headers = {**self.headers, "Range": f"bytes={offset}-"}
        with _open_following_redirects(url, headers) as response:
            if response.status_code == 200 and offset:  # the server ignored Range: rewrite from byte 0
                self.progress.add(-offset)
                digest, offset = hashlib.sha256(), 0
            with part.open("r+b" if offset else "wb") as out:
                out.seek(offset)
                out.truncate()
                for chunk in response.iter_bytes():  # as received: a dropped connection loses nothing
                    if self.cancel.is_set():
                        raise DownloadCancelled(part.parent)
                    out.write(chunk)
                    digest.update(chunk)
                    self.progress.add(len(chunk), fetched=True)
        if part.stat().st_size != file.size:
            raise httpx2.RemoteProtocolError(f"{file.path}: the connection ended early")
        return digest.hexdigest()


class _open_following_redirects:  # noqa: N801 - used as a context manager, like httpx's stream()
    """A streamed GET that follows redirects itself, sending the token only to the Hub's own host."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self._stream: object | None = None

    def __enter__(self) -> httpx2.Response:
        session, origin, headers, url = get_session(), _origin(self.url), dict(self.headers), self.url
        for _ in range(_MAX_REDIRECTS + 1):
            stream = session.stream(
                "GET", url, headers=headers, follow_redirects=False, timeout=REQUEST_TIMEOUT_S
            )
            response = stream.__enter__()
            if not response.is_redirect:
                self._stream = stream
                if response.status_code >= 400:
                    response.read()  # hf_raise_for_status reads the error body
                    stream.__exit__(None, None, None)
                    hf_raise_for_status(response)
                return response
            location = urljoin(url, response.headers["Location"])
            stream.__exit__(None, None, None)
            if _origin(location) != origin:
                headers.pop("authorization", None)
                headers.pop("Authorization", None)
            url = location
        raise HubError(f"Too many redirects downloading {self.url}.")

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.__exit__(*exc)  # type: ignore[attr-defined]


class _Progress:
    """Byte counts of all shards, reported at most every ``PROGRESS_INTERVAL_S`` (thread-safe)."""

    def __init__(self, total: int, done: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self.fetched = total, done, 0
        self._callback = callback
        self._lock = threading.Lock()
        self._last_call = 0.0
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])

    def add(self, count: int, *, fetched: bool = False) -> None:
        with self._lock:
            self.done += count
            if fetched:
                self.fetched += count
            now = time.monotonic()
            if now - self._last_call >= PROGRESS_INTERVAL_S:
                self._report(now)

    def finish(self) -> None:
        with self._lock:
            self.done = self.total
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        # Called with the lock held, so reports arrive in order.
        self._last_call = now
        self._samples.append((now, self.fetched))
        while len(self._samples) > 2 and now - self._samples[0][0] > _SPEED_WINDOW_S:
            self._samples.popleft()
        (t0, f0), (t1, f1) = self._samples[0], self._samples[-1]
        speed = (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0
        eta = (self.total - self.done) / speed if speed > 0 else None
        if self._callback is not None:
            self._callback(DownloadProgress(self.done, self.total, speed, eta))


def _hash_into(path: Path, digest: hashlib._Hash, cancel: threading.Event) -> int:
    """Feed ``path``'s bytes to ``digest``; return how many."""
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            if cancel.is_set():
                raise DownloadCancelled(path.parent)
            digest.update(chunk)
            count += len(chunk)
    return count


def _hash_file(path: Path, cancel: threading.Event) -> str:
    digest = hashlib.sha256()
    _hash_into(path, digest, cancel)
    return digest.hexdigest()


def _transient(error: Exception) -> bool:
    if isinstance(error, httpx2.TransportError):
        return True
    response = getattr(error, "response", None)
    status = response.status_code if response is not None else 0
    return status >= 500 or status == 429


def _origin(url: str) -> tuple[str, str]:
    split = urlsplit(url)
    return split.scheme, split.netloc


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk_free(folder: Path) -> int:
    return shutil.disk_usage(folder).free

