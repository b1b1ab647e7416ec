"""GGUF models already in the Hugging Face cache (``~/.cache/huggingface/hub``), found with
``huggingface_hub.scan_cache_dir``, so the library can use them where they are instead of a copy.

A snapshot folder holds the repo's files under their repo paths (symlinks to the blobs), so a split
model's shards sit side by side there with their real names, as llama.cpp needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import scan_cache_dir
from huggingface_hub.errors import CacheNotFound

from app.hub.quants import Quant, QuantFile, group_quants


@dataclass(frozen=True)
class HfCacheQuant:
    """One quant of one cached revision of a model repo."""

    repo_id: str
    revision: str  # commit hash of the snapshot
    refs: tuple[str, ...]  # branch names pointing at it ("main"), if any
    quant: Quant  # file paths relative to the snapshot
    snapshot: Path

    @property
    def path(self) -> Path:
        """The first shard, in the snapshot folder (the path to load)."""
        return self.snapshot / self.quant.first_file

    @property
    def missing(self) -> tuple[int, ...]:
        """Shard numbers not in the cache (a partial ``hf download``)."""
        return self.quant.missing_shards

    @property
    def name(self) -> str:
        """The library name: repo, quant and the snapshot's short commit."""
        return f"{self.repo_id}:{self.quant.name}@{self.revision[:7]}"


def hf_cache_quants(cache_dir: Path | None = None) -> list[HfCacheQuant]:
    """The GGUF quants of every model repo revision in the cache (default: huggingface_hub's).

    A cache folder that does not exist has none. Incomplete quants are listed with ``missing`` set.
    """
    try:
        cache = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            files = [
                QuantFile(path=f.file_path.relative_to(revision.snapshot_path).as_posix(),
                          size=f.size_on_disk, sha256=None)
                for f in revision.files
            ]
            for quant in group_quants(files):
                found.append(HfCacheQuant(repo.repo_id, revision.commit_hash, tuple(sorted(revision.refs)),
                                          quant, revision.snapshot_path))
    return found
