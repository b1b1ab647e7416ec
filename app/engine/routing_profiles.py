"""Routing profiles remembered per model file, as autotune remembers plans.

A profile is how often each layer's router chose each expert, summed over the runs of a model
with the hot-expert cache on. At the next load it ranks the experts the cache keeps in VRAM,
in place of the warm-up prefill of a built-in text: a user's own chats route more like the
user's next chats than any text chosen in advance does.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app import paths

if TYPE_CHECKING:
    from app.gguf.info import GGUFModel

Profile = list[list[int]]
PROFILE_FILE = "routing-profiles.json"


def _store_path() -> Path:
    return paths.cache_dir() / PROFILE_FILE


def profile_key(model_path: Path) -> str:
    """A model file by path, size and modification time: a changed file starts a new profile."""
    st = model_path.stat()
    ident = f"{model_path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def _load() -> dict[str, dict[str, object]]:
    try:
        store = json.loads(_store_path().read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: profiles are rebuilt by use
    return store if isinstance(store, dict) else {}


def _counts(entry: object, n_layer: int, n_expert: int) -> Profile | None:
    """A store entry's counts, if they are a profile of this shape."""
    counts = entry.get("counts") if isinstance(entry, dict) else None
    if (isinstance(counts, list) and len(counts) == n_layer
            and all(isinstance(row, list) and len(row) == n_expert
                    and all(isinstance(c, int) and c >= 0 for c in row) for row in counts)):
        return counts
    return None


def remembered(model_path: Path, n_layer: int, n_expert: int) -> Profile | None:
    """The profile of ``model_path`` if one of this shape is remembered."""
    try:
        key = profile_key(model_path)
    except OSError:
        return None
    return _counts(_load().get(key), n_layer, n_expert)


def remembered_for(model: GGUFModel) -> Profile | None:
    """The profile remembered for a model (by its first shard), if one of its shape is."""
    return remembered(model.shards[0], model.n_layer, model.n_expert)


def most_chosen(profile: Profile, layer: int, n: int) -> list[int]:
    """The ``n`` experts of ``layer`` the profile counts most often, most chosen first."""
    row = profile[layer]
    return sorted(range(len(row)), key=lambda e: -row[e])[:n]


def remember(model_path: Path, counts: Profile) -> None:
    """Add ``counts`` to the profile of ``model_path`` (atomically: a crash while writing leaves
    the old store whole). Raises OSError when the store cannot be written."""
    store = _load()
    key = profile_key(model_path)
    before = _counts(store.get(key), len(counts), len(counts[0]) if counts else 0)
    if before is not None:
        counts = [[a + b for a, b in zip(old, new, strict=True)]
                  for old, new in zip(before, counts, strict=True)]
    store[key] = {"model": str(model_path), "counts": counts,
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = _store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".routing-profiles-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(store, out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
