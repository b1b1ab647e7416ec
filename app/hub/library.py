"""The library of local models: completed downloads, and GGUF files imported from elsewhere on disk.

Plain Python (no Qt): the GUI calls it from a worker thread, the CLI directly.

- Downloads are found in the models folder by their completion marker (``app.hub.folder``): a quant
  appears only once every shard is downloaded and verified; a download in progress never does.
- Imports (a file, a folder, or GGUF repos in the Hugging Face cache) are remembered by reference, not
  copied, in a JSON index under ``app.paths.data_dir()``, written atomically. An import appears only
  while all its shards are present and its headers readable; otherwise ``models(include_unavailable=
  True)`` lists it with the problem, so it can be forgotten.

Deleting a download removes its shards (and its marker entry), never a file outside the models folder;
deleting an import only forgets it: MoE Desk does not delete files it did not download.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from app import paths
from app.errors import MissingShardError, ModelFileError
from app.gguf.info import SHARD_NAME, read_model, shard_names, shard_paths, split_numbers
from app.hub.folder import MARKER_NAME, part, read_marker, remove_empty_folders, repo_folder, write_marker
from app.hub.hf_cache import HfCacheQuant, hf_cache_quants
from app.hub.quants import is_model_gguf, quant_name

INDEX_NAME = "library.json"
INDEX_VERSION = 1

Source = Literal["download", "file", "hf-cache"]


class LibraryError(Exception):
    """A library request that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class LocalModel:
    """One model on this machine, ready to load by ``path`` (its first shard) unless ``problem``."""

    name: str  # "owner/repo:Q4_K_M" for downloads; the file name (without shard suffix) for imports
    source: Source
    path: Path
    shards: tuple[Path, ...]
    size: int  # bytes on disk
    architecture: str | None = None  # from the GGUF header ("qwen3moe")
    quant: str | None = None  # from the GGUF header's file type, else the file name ("Q4_K_M")
    repo: str | None = None
    revision: str | None = None  # HF cache imports: the snapshot's commit
    repo_quant: str | None = None  # downloads: the quant's name in its repo (the marker's key)
    problem: str | None = None  # why it cannot be loaded now (a shard missing, a damaged file)

    @property
    def available(self) -> bool:
        return self.problem is None

    @property
    def imported(self) -> bool:
        return self.source != "download"


@dataclass
class ImportReport:
    """What an import did: models added, models the library already had, files it could not use."""

    added: list[LocalModel] = field(default_factory=list)
    already: list[LocalModel] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)


class Library:
    """The models in ``models_dir`` (downloads) and those imported, remembered in ``index_path``."""

    def __init__(self, models_dir: Path | None = None, index_path: Path | None = None) -> None:
        self.models_dir = Path(models_dir) if models_dir else paths.default_models_dir()
        self.index_path = Path(index_path) if index_path else paths.data_dir() / INDEX_NAME

    # -- listing -------------------------------------------------------------------------------
    def models(self, include_unavailable: bool = False) -> list[LocalModel]:
        """Downloads first (by name), then imports in the order they were added."""
        found = sorted(self._downloads(), key=lambda m: m.name.lower())
        found += [self._imported(entry) for entry in self._read_index()]
        return [m for m in found if include_unavailable or m.available]

    def get(self, name: str) -> LocalModel:
        """The model called ``name`` (available or not); LibraryError naming the choices if none."""
        everything = self.models(include_unavailable=True)
        for model in everything:
            if model.name == name:
                return model
        names = ", ".join(m.name for m in everything) or "the library is empty"
        raise LibraryError(f"No model named '{name}' in the library ({names}).")

    # -- importing -----------------------------------------------------------------------------
    def import_path(self, path: Path | str) -> ImportReport:
        """Import a GGUF file (any shard of a split model) or every GGUF model under a folder.

        A single file that cannot be used raises ``ModelFileError``/``MissingShardError`` (with the
        fix); in a folder, such files are listed in ``ImportReport.skipped`` instead.
        """
        path = Path(os.path.abspath(Path(path).expanduser()))  # absolute, symlinks kept
        if not path.exists():
            raise LibraryError(f"{path} does not exist. Check the path, or pick the file again.")
        report = ImportReport()
        if path.is_file():
            self._add(first_shard(path), "file", report)
            return report
        firsts = sorted({first_shard(p) for p in path.rglob("*.gguf") if is_model_gguf(p.name)})
        if not firsts:
            raise LibraryError(f"No GGUF model files in {path} or its subfolders.")
        for first in firsts:
            try:
                self._add(first, "file", report)
            except ModelFileError as error:
                report.skipped.append((first, str(error)))
        return report

    def import_hf_cache(self, cache_dir: Path | None = None,
                        only: Iterable[HfCacheQuant] | None = None) -> ImportReport:
        """Import the complete GGUF quants in the Hugging Face cache (or ``only`` those), by reference."""
        report = ImportReport()
        for item in list(only) if only is not None else hf_cache_quants(cache_dir):
            if item.missing:
                report.skipped.append((item.path, f"shards {item.missing} are not in the cache"))
                continue
            try:
                self._add(item.path, "hf-cache", report, repo=item.repo_id, revision=item.revision,
                          name=item.name)
            except ModelFileError as error:
                report.skipped.append((item.path, str(error)))
        return report

    # -- deleting ------------------------------------------------------------------------------
    def delete(self, name: str) -> LocalModel:
        """Delete a download's files, or forget an import (its files stay); return what it was."""
        model = self.get(name)
        if model.imported:
            self._write_index([e for e in self._read_index() if e["name"] != name])
            return model
        root = repo_folder(self.models_dir, model.repo or "")
        marker = read_marker(root)
        entry = marker.get("quants", {}).pop(model.repo_quant, None)
        shards = [root / f["path"] for f in (entry or {}).get("files", [])] or list(model.shards)
        for shard in shards:
            if not shard.resolve().is_relative_to(self.models_dir.resolve()):
                raise LibraryError(f"Refusing to delete {shard}: it is outside the models folder "
                                   f"{self.models_dir}.")
        for shard in shards:
            shard.unlink(missing_ok=True)
            part(shard).unlink(missing_ok=True)
        write_marker(root, marker)
        remove_empty_folders({s.parent for s in shards}, root)
        return model

    # -- internals -----------------------------------------------------------------------------
    def _downloads(self) -> list[LocalModel]:
        if not self.models_dir.is_dir():
            return []
        found = []
        for marker_path in sorted(self.models_dir.glob(f"*/{MARKER_NAME}")):
            root = marker_path.parent
            marker = read_marker(root)
            repo = str(marker.get("repo") or root.name.replace("--", "/", 1))
            for quant, entry in marker.get("quants", {}).items():
                files = entry.get("files") or []
                if not files:
                    continue
                shards = tuple(root / f["path"] for f in files)
                wrong = [s.name for s, f in zip(shards, files, strict=True)
                         if not s.is_file() or s.stat().st_size != f["size"]]
                problem = (f"{len(wrong)} shard(s) missing or changed since the download: "
                           f"{', '.join(wrong)}. Delete it and download it again.") if wrong else None
                found.append(_describe(f"{repo}:{quant}", "download", shards, problem, repo=repo,
                                       repo_quant=quant))
        return found

    def _imported(self, entry: dict) -> LocalModel:
        first = Path(entry["path"])
        shards, problem = (first,), None
        if not first.is_file():
            problem = (f"{first} is no longer there (moved or deleted). Import it again from where it "
                       "is now, or forget it.")
        else:
            try:
                shards = tuple(shard_paths(first))
            except MissingShardError as error:
                problem = str(error)
        return _describe(entry["name"], entry["source"], shards, problem,
                         repo=entry.get("repo"), revision=entry.get("revision"))

    def _add(self, first: Path, source: Source, report: ImportReport, *, repo: str | None = None,
             revision: str | None = None, name: str | None = None) -> None:
        for model in self.models(include_unavailable=True):
            if _same_file(model.path, first):
                report.already.append(model)
                return
        read_model(first)  # raises ModelFileError / MissingShardError, with the fix
        index = self._read_index()
        taken = {m.name for m in self._downloads()} | {e["name"] for e in index}
        added = datetime.now(timezone.utc).isoformat(timespec="seconds")
        entry = {"name": _unique(name or model_stem(first), taken), "path": str(first), "source": source,
                 "repo": repo, "revision": revision, "added": added}
        self._write_index([*index, entry])
        report.added.append(self._imported(entry))

    def _read_index(self) -> list[dict]:
        try:
            data = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise LibraryError(
                f"The library index {self.index_path} cannot be read ({error}). Fix the file, or move "
                "it away to start an empty library (downloaded models are found again by themselves)."
            ) from error
        if not isinstance(data, dict) or not isinstance(data.get("imports"), list):
            raise LibraryError(f"The library index {self.index_path} is not MoE Desk's (no 'imports' "
                               "list). Move it away to start an empty library.")
        return [e for e in data["imports"] if isinstance(e, dict) and {"name", "path", "source"} <= e.keys()]

    def _write_index(self, imports: list[dict]) -> None:
        tmp = self.index_path.with_name(self.index_path.name + ".tmp")
        try:
            paths.private_file(tmp)  # which models a user has is theirs to know
            tmp.write_text(json.dumps({"version": INDEX_VERSION, "imports": imports}, indent=2))
            tmp.replace(self.index_path)  # atomic: a crash leaves the old index or the new one
        except OSError as error:
            raise LibraryError(f"The library index {self.index_path} cannot be written "
                               f"({error.strerror or error}). Free some disk space, or check that "
                               "the folder is writable by you.") from error


def first_shard(path: Path) -> Path:
    """The first shard of the split model ``path`` belongs to (``path`` itself if it is not split,
    or if its name cannot be a shard's: reading it then says why)."""
    try:
        numbers = split_numbers(path.name)
    except ModelFileError:
        return path
    if numbers is None:
        return path
    prefix, _, count = numbers
    return path.with_name(shard_names(prefix, count)[0])


def model_stem(first: Path) -> str:
    """A model's name from its first file: ``Qwen3-30B-A3B-Q4_K_M`` for ``...-00001-of-00003.gguf``."""
    match = SHARD_NAME.match(first.name)
    return match["prefix"] if match else first.name.removesuffix(".gguf")


def reveal_command(path: Path, platform: str = sys.platform) -> list[str]:
    """The command that shows ``path`` in the platform's file manager (selected where it can be)."""
    if platform == "darwin":
        return ["open", "-R", str(path)]
    if platform.startswith("win"):
        return ["explorer", f"/select,{path}"]
    # xdg-open opens folders in the desktop's file manager; it cannot select a file.
    return ["xdg-open", str(path if path.is_dir() else path.parent)]


def reveal(path: Path) -> None:
    """Open the file manager at ``path``, without waiting for it."""
    import subprocess

    try:
        subprocess.Popen(reveal_command(path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as error:
        raise LibraryError(f"Cannot open a file manager ({error}). The model is in {path.parent}.") from error


_header_cache: dict[tuple[tuple[str, int, int], ...], tuple[str | None, str | None]] = {}


def _describe(name: str, source: Source, shards: tuple[Path, ...], problem: str | None, *,
              repo: str | None = None, revision: str | None = None,
              repo_quant: str | None = None) -> LocalModel:
    """A LocalModel with size on disk, and architecture and quant read from the headers."""
    size = sum(s.stat().st_size for s in shards if s.is_file())
    architecture = quant = None
    if problem is None:
        try:
            architecture, quant = _header_facts(shards)
        except ModelFileError as error:
            problem = str(error)
    quant = quant or quant_name(shards[0].name)
    return LocalModel(name=name, source=source, path=shards[0], shards=shards, size=size,
                      architecture=architecture, quant=quant, repo=repo, revision=revision,
                      repo_quant=repo_quant, problem=problem)


def _header_facts(shards: tuple[Path, ...]) -> tuple[str | None, str | None]:
    """(architecture, quant) of a model, its headers checked, cached while no shard changes."""
    key = tuple((str(s), s.stat().st_size, s.stat().st_mtime_ns) for s in shards)
    if key not in _header_cache:
        model = read_model(shards[0])
        _header_cache[key] = (model.architecture, _file_type_name(model.metadata.get("general.file_type")))
    return _header_cache[key]


def _file_type_name(value: object) -> str | None:
    """llama.cpp's name for ``general.file_type`` (15 -> "Q4_K_M")."""
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(value)).name.removeprefix("MOSTLY_").removeprefix("ALL_")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a == b or a.samefile(b)
    except OSError:
        return False


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"
