"""What a download leaves on disk: the repo's folder, ``.part`` files and the completion marker.

A repo's quants go to ``<models dir>/<owner>--<model>/<path in the repo>``. A shard being fetched is
``<name>.part``; only when every shard of a quant is verified are they renamed and the quant added to
the folder's ``moedesk-download.json`` marker, so the library can tell a complete model from a partial
one without hashing anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from app.hub.errors import HubError
from app.hub.quants import Quant, QuantFile

MARKER_NAME = "moedesk-download.json"
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class LocalState:
    """How much of a quant is on disk: ``done`` counts ``.part`` bytes too."""

    done: int
    total: int
    complete: bool  # every shard downloaded and verified (the marker lists it)


def repo_folder(dest_dir: Path, repo_id: str) -> Path:
    """The folder a repo's quants are downloaded into: ``dest_dir/<owner>--<model>``."""
    return Path(dest_dir) / repo_id.replace("/", "--")


def local_state(repo_id: str, quant: Quant, dest_dir: Path) -> LocalState:
    """What an earlier (or paused) download left of ``quant`` in ``dest_dir``; no hashing."""
    root = repo_folder(dest_dir, repo_id)
    targets = [target(root, file) for file in quant.files]
    if already_complete(root, quant, targets):
        return LocalState(quant.total_size, quant.total_size, True)
    done = sum(bytes_on_disk(f, t) for f, t in zip(quant.files, targets, strict=True))
    return LocalState(done, quant.total_size, False)


def discard_partial(repo_id: str, quant: Quant, dest_dir: Path) -> int:
    """Delete what an unfinished download of ``quant`` left (``.part`` files); return the bytes freed.

    A quant the marker lists as complete is left alone. Call it only when no download of this quant
    runs. Folders left empty are removed, up to and including the repo's folder.
    """
    root = repo_folder(dest_dir, repo_id)
    targets = [target(root, file) for file in quant.files]
    if already_complete(root, quant, targets):
        return 0
    freed = 0
    for shard in targets:
        # A final file without the marker is left from a crash between rename and marker: partial too.
        for path in (part(shard), shard):
            if path.is_file():
                freed += path.stat().st_size
                path.unlink()
    remove_empty_folders({t.parent for t in targets}, root)
    return freed


def remove_empty_folders(folders: set[Path], root: Path) -> None:
    """Remove each folder if empty, then its parents up to ``root`` (included) while they are empty."""
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        while folder.is_relative_to(root):
            try:
                folder.rmdir()  # only succeeds on an empty folder
            except OSError:
                break
            if folder == root:
                break
            folder = folder.parent


def read_marker(folder: Path) -> dict:
    """The quants completed in a repo folder: ``{"repo": ..., "quants": {name: {...}}}`` (empty if none)."""
    try:
        marker = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def write_marker(folder: Path, marker: dict) -> None:
    """Replace the marker atomically; a marker with no quants left is removed."""
    path = folder / MARKER_NAME
    if not marker.get("quants"):
        path.unlink(missing_ok=True)
        return
    tmp = folder / (MARKER_NAME + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2))
    tmp.replace(path)


def mark_complete(root: Path, repo_id: str, quant: Quant) -> None:
    """Add ``quant`` to the marker of ``root``: all its shards are there and verified."""
    marker = read_marker(root) or {"repo": repo_id, "quants": {}}
    marker.setdefault("quants", {})[quant.name] = {
        "quant": quant.name,
        "files": _file_entries(quant),
        "completed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_marker(root, marker)


def already_complete(root: Path, quant: Quant, targets: list[Path]) -> bool:
    """The marker lists this quant with the same files, and they are all there with their sizes."""
    entry = read_marker(root).get("quants", {}).get(quant.name)
    same = entry is not None and entry.get("files") == _file_entries(quant)
    present = (t.exists() and t.stat().st_size == f.size for f, t in zip(quant.files, targets, strict=True))
    return same and all(present)


def target(root: Path, file: QuantFile) -> Path:
    """Where a repo file goes under ``root``; refuses a name that would land outside it."""
    path = (root / file.path).resolve()
    if not path.is_relative_to(root.resolve()):
        raise HubError(f"Refusing to write '{file.path}' outside {root}: the repo's file name is unsafe.")
    return root / file.path


def part(shard: Path) -> Path:
    """The file a shard is written to until the whole quant is verified."""
    return shard.with_name(shard.name + PART_SUFFIX)


def bytes_on_disk(file: QuantFile, shard: Path) -> int:
    """Bytes of ``file`` already on disk, final or in its ``.part``."""
    if shard.exists() and shard.stat().st_size == file.size:
        return file.size
    partial = part(shard)
    return min(partial.stat().st_size, file.size) if partial.exists() else 0


def _file_entries(quant: Quant) -> list[dict]:
    return [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in quant.files]
