"""Group a GGUF repo's files into quantizations: pure functions over (path, size, sha256).

GGUF repos lay quants out two ways, often mixed:

- a folder per quant: ``Q4_K_M/DeepSeek-R1-Q4_K_M-00001-of-00009.gguf``
- flat files named after the quant: ``Qwen3-30B-A3B-Q4_K_M.gguf``, ``...-UD-Q2_K_XL-00001-of-00002.gguf``

Split models (llama.cpp's ``gguf-split``: ``-00001-of-00009.gguf``) are one quant; a shard missing from
the repo is named in ``Quant.missing_shards``. Vision projectors (``mmproj``), importance matrices and
non-GGUF files are not quants and are left out.

A repo can hold one quant type twice (a flat ``gpt-oss-120b-F16.gguf`` beside an ``F16/`` folder of
shards, a re-upload split in more shards beside the old ones): each is then named with where it is,
``F16 (F16/)`` or ``Q8_0 (16 shards)``, since the Models page, the download marker and
``moedesk-cli download --quant`` find a quant by its name. Shards of one set spread over two folders
stay two incomplete quants: llama.cpp finds a set's shards beside its first one only.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

# llama.cpp's quantization types (llama-quantize), plus the variants GGUF publishers add:
# unsloth's dynamic "UD-" quants, _XL/_L mixes (Q4_K_XL, Q6_K_L) and ARM repacks (Q4_0_4_4).
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])"
    r"(?P<quant>(?:UD-)?(?:"
    r"Q4_0_[48]_[48]"
    r"|IQ[1-4]_(?:XXS|XS|NL|XL|S|M)"
    r"|Q[2-8]_K(?:_(?:XXL|XL|S|M|L))?"
    r"|Q[4-8]_[01]"
    r"|TQ[12]_0"
    r"|MXFP4(?:_MOE)?"
    r"|BF16|F16|F32"
    r"))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_SHARD_RE = re.compile(r"-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_NOT_A_MODEL = ("mmproj", "imatrix")


@dataclass(frozen=True)
class QuantFile:
    """One file of a quant; ``sha256`` is the LFS hash (None for a file not stored in LFS)."""

    path: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class Quant:
    """One quantization of a model: one GGUF file, or the shards of a split one."""

    name: str  # "Q4_K_M", "UD-Q2_K_XL", or the file's stem when no quant type is recognised
    files: tuple[QuantFile, ...]  # shards in order
    shard_count: int  # as the shard names declare it; 1 for an unsplit file
    missing_shards: tuple[int, ...] = ()  # 1-based numbers of declared shards absent from the repo

    @property
    def total_size(self) -> int:
        """Bytes of the files present (a quant with missing shards is bigger than this)."""
        return sum(f.size for f in self.files)

    @property
    def complete(self) -> bool:
        return not self.missing_shards

    @property
    def first_file(self) -> str:
        """The path llama.cpp is given: it finds the other shards beside it."""
        return self.files[0].path

    @property
    def folder(self) -> str:
        """The repo folder of its files ("" at the top level)."""
        return self.first_file.rpartition("/")[0]


def quant_name(path: str) -> str | None:
    """The quant type a GGUF path names, in llama.cpp's spelling (``Q4_K_M``), or None.

    The file name wins over the folders (its last match, as the quant ends the name); then the
    innermost folder.
    """
    *folders, filename = path.split("/")
    for part in (filename, *reversed(folders)):
        matches = _QUANT_RE.findall(part)
        if matches:
            return matches[-1].upper()
    return None


def is_model_gguf(path: str) -> bool:
    """A GGUF file of model weights (not a vision projector or an importance matrix)."""
    filename = path.rsplit("/", 1)[-1].lower()
    return filename.endswith(".gguf") and not any(word in filename for word in _NOT_A_MODEL)


def group_quants(files: Iterable[QuantFile]) -> list[Quant]:
    """The quants among a repo's files, smallest first, those with missing shards last (their size
    is only what is there); non-model files are ignored. Names are unique."""
    groups: dict[tuple[str, int], dict[int, QuantFile]] = {}
    for file in files:
        if not is_model_gguf(file.path):
            continue
        shard = _SHARD_RE.search(file.path)
        if shard:
            key = (file.path[: shard.start()], int(shard["count"]))
            groups.setdefault(key, {})[int(shard["index"])] = file
        else:
            groups.setdefault((file.path[: -len(".gguf")], 1), {})[1] = file

    quants = []
    for (stem, count), shards in groups.items():
        name = quant_name(stem + ".gguf") or stem.rsplit("/", 1)[-1]
        missing = tuple(i for i in range(1, count + 1) if i not in shards)
        present = tuple(shards[i] for i in sorted(shards))
        quants.append(Quant(name=name, files=present, shard_count=count, missing_shards=missing))
    quants = _unique_names(quants)
    return sorted(quants, key=lambda q: (not q.complete, q.total_size, q.name))


def _unique_names(quants: list[Quant]) -> list[Quant]:
    """Quants that share a name, each named with where it is: its folder if that tells them apart,
    else its shard count, else both, else its file name."""
    same: dict[str, list[Quant]] = defaultdict(list)
    for quant in quants:
        same[quant.name].append(quant)

    def shards(q: Quant) -> str:
        return f"{q.shard_count} shards" if q.shard_count > 1 else "one file"

    def where(q: Quant) -> str:
        return f"{q.folder}/" if q.folder else "top level"

    def stem(q: Quant) -> str:
        return f"{_SHARD_RE.sub('', q.first_file).removesuffix('.gguf')}, {shards(q)}"

    details: tuple[Callable[[Quant], str], ...] = (where, shards, lambda q: f"{where(q)}, {shards(q)}", stem)
    renamed: dict[Quant, str] = {}
    for name, group in same.items():
        if len(group) > 1:
            detail = next(d for d in details if len({d(q) for q in group}) == len(group))
            renamed |= {q: f"{name} ({detail(q)})" for q in group}
    return [replace(q, name=renamed[q]) if q in renamed else q for q in quants]
