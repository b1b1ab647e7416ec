"""Downloading a quant's shards: real HTTP against the local Hub, real files on disk."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from app.hub.download import (
    MARKER_NAME,
    ChecksumError,
    DiskFullError,
    DownloadCancelled,
    DownloadProgress,
    download_quant,
)
from app.hub.errors import GatedRepoError, HubUnreachableError
from app.hub.quants import Quant
from app.hub.repo import list_gguf_quants
from tests import hub_server
from tests.hub_server import HubRepo, LargeFile, LocalHub

local_hub = hub_server.local_hub  # the fixture, where pytest looks for it

REPO = "unsloth/Tiny-MoE-GGUF"
SHARD_SIZE = 3 * 2**20 + 123  # a few chunks each, not a multiple of the chunk size
SHARDS = [f"Q4_K_M/Tiny-MoE-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
FAST = {"retry_delay_s": 0.01}


def publish(hub: LocalHub, **repo_options: object) -> Quant:
    """A 3-shard Q4_K_M (each shard with its own bytes) on the local Hub, as list_gguf_quants sees it."""
    files: dict[str, bytes | LargeFile] = {
        path: LargeFile(SHARD_SIZE, pattern=f"GGUF{i}".encode()) for i, path in enumerate(SHARDS)
    }
    files["README.md"] = b"# Tiny MoE\n"
    hub.add(REPO, HubRepo(files, **repo_options))  # type: ignore[arg-type]
    (quant,) = list_gguf_quants(REPO, endpoint=hub.url)
    return quant


def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models" / "unsloth--Tiny-MoE-GGUF"


def settled_bytes_served(hub: LocalHub) -> int:
    """``hub.bytes_served`` once the server has stopped writing to connections the client dropped."""
    while True:
        before = hub.bytes_served
        time.sleep(0.2)
        if hub.bytes_served == before:
            return before


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_all_shards_download_with_progress_and_verified_hashes(local_hub: LocalHub, tmp_path: Path) -> None:
    quant = publish(local_hub)
    seen: list[DownloadProgress] = []

    paths = download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url, on_progress=seen.append)

    assert paths == [model_dir(tmp_path) / p for p in SHARDS]
    assert [sha256(p) for p in paths] == [f.sha256 for f in quant.files]
    assert not list(model_dir(tmp_path).rglob("*.part"))
    assert seen[-1].done == seen[-1].total == quant.total_size and seen[-1].eta_s == 0
    assert all(a.done <= b.done for a, b in zip(seen, seen[1:], strict=False))
    marker = json.loads((model_dir(tmp_path) / MARKER_NAME).read_text())
    entry = marker["quants"]["Q4_K_M"]
    assert marker["repo"] == REPO and entry["completed"]
    assert [f["sha256"] for f in entry["files"]] == [f.sha256 for f in quant.files]

    # Asked again: the marker says it is complete, nothing is fetched.
    served = local_hub.bytes_served
    assert download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url) == paths
    assert local_hub.bytes_served == served


def test_a_dropped_connection_is_retried_from_where_it_stopped(local_hub: LocalHub, tmp_path: Path) -> None:
    quant = publish(local_hub)
    local_hub.drop_after[SHARDS[1]] = [500_000, 700_000]

    paths = download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url, **FAST)

    assert sha256(paths[1]) == quant.files[1].sha256
    assert local_hub.bytes_served == quant.total_size  # each retry asked only for the missing bytes


def test_a_download_cut_off_resumes_from_the_part_file_on_the_next_call(
    local_hub: LocalHub, tmp_path: Path
) -> None:
    quant = publish(local_hub)
    local_hub.drop_after[SHARDS[2]] = [1_000_000]

    with pytest.raises(HubUnreachableError):
        download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url, max_retries=0)
    part = model_dir(tmp_path) / (SHARDS[2] + ".part")
    kept = part.stat().st_size
    assert 0 < kept <= 1_000_000
    assert not (model_dir(tmp_path) / SHARDS[0]).exists()  # nothing final until every shard is verified

    served = settled_bytes_served(local_hub)
    paths = download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url)

    assert local_hub.bytes_served - served == SHARD_SIZE - kept < quant.total_size
    assert [sha256(p) for p in paths] == [f.sha256 for f in quant.files]


def test_a_shard_corrupt_once_is_fetched_again_alone(local_hub: LocalHub, tmp_path: Path) -> None:
    quant = publish(local_hub)
    local_hub.corrupt[SHARDS[0]] = 1

    paths = download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url)

    assert sha256(paths[0]) == quant.files[0].sha256
    assert local_hub.bytes_served == quant.total_size + SHARD_SIZE


def test_a_shard_that_stays_corrupt_raises_and_the_others_are_kept(
    local_hub: LocalHub, tmp_path: Path
) -> None:
    quant = publish(local_hub)
    local_hub.corrupt[SHARDS[1]] = 2

    with pytest.raises(ChecksumError, match="Tiny-MoE-Q4_K_M-00002-of-00003.gguf") as caught:
        download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url)

    assert caught.value.expected == quant.files[1].sha256
    folder = model_dir(tmp_path)
    assert not (folder / (SHARDS[1] + ".part")).exists()
    assert [(folder / (p + ".part")).stat().st_size for p in (SHARDS[0], SHARDS[2])] == [SHARD_SIZE] * 2
    assert not (folder / MARKER_NAME).exists()

    served = local_hub.bytes_served
    download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url)
    assert local_hub.bytes_served - served == SHARD_SIZE  # only the bad shard again


def test_a_gated_repo_needs_a_granted_token(local_hub: LocalHub, tmp_path: Path) -> None:
    quant = publish(local_hub, gated=True, tokens=frozenset({"hf_granted"}))

    with pytest.raises(GatedRepoError, match="gated"):
        download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url)
    with pytest.raises(GatedRepoError, match="not been granted"):
        download_quant(REPO, quant, tmp_path / "models", token="hf_other", endpoint=local_hub.url)

    paths = download_quant(REPO, quant, tmp_path / "models", token="hf_granted", endpoint=local_hub.url)
    assert [sha256(p) for p in paths] == [f.sha256 for f in quant.files]


def test_cancel_stops_quickly_and_a_later_call_resumes(local_hub: LocalHub, tmp_path: Path) -> None:
    quant = publish(local_hub)
    cancel = threading.Event()

    def cancel_at_first_progress(progress: DownloadProgress) -> None:
        cancel.set()

    started = time.monotonic()
    with pytest.raises(DownloadCancelled, match="continue where it stopped"):
        download_quant(
            REPO,
            quant,
            tmp_path / "models",
            endpoint=local_hub.url,
            on_progress=cancel_at_first_progress,
            cancel=cancel,
        )
    assert time.monotonic() - started < 2
    parts = list(model_dir(tmp_path).rglob("*.part"))
    kept = sum(p.stat().st_size for p in parts)
    assert 0 < kept < quant.total_size
    assert not any(p.suffix == ".gguf" for p in model_dir(tmp_path).rglob("*"))

    served = settled_bytes_served(local_hub)
    paths = download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url)
    assert local_hub.bytes_served - served == quant.total_size - kept
    assert [sha256(p) for p in paths] == [f.sha256 for f in quant.files]


def test_not_enough_disk_space_fails_before_writing(local_hub: LocalHub, tmp_path: Path) -> None:
    quant = publish(local_hub)

    with pytest.raises(DiskFullError, match="choose a folder on another disk") as caught:
        download_quant(REPO, quant, tmp_path / "models", endpoint=local_hub.url, free_space=lambda _: 2**20)

    assert (caught.value.needed, caught.value.free) == (quant.total_size, 2**20)
    assert not (tmp_path / "models").exists()
    assert local_hub.bytes_served == 0
