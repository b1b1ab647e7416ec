"""The local model library: real downloads from the local Hub, real GGUF files, a real HF cache."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from app import paths
from app.cli import main as cli_main
from app.errors import MissingShardError, ModelFileError
from app.gguf.info import read_model
from app.hub.download import DownloadCancelled, download_quant
from app.hub.folder import MARKER_NAME
from app.hub.hf_cache import hf_cache_quants
from app.hub.library import Library, LibraryError, reveal_command
from app.hub.repo import list_gguf_quants
from tests import hub_server
from tests.hub_server import LocalHub, repo_of_files

local_hub = hub_server.local_hub  # the fixture, where pytest looks for it

REPO = "moedesk/Tiny-MoE-GGUF"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MoE Desk's folders (data, models, index) under a temporary MOEDESK_HOME."""
    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def publish_tiny(hub: LocalHub, split: list[Path], single: Path) -> None:
    """A repo with a 3-shard Q4_0 (the split tiny model) and a one-file F16-named quant."""
    files = {f"Q4_0/{p.name}": p for p in split}
    files["tiny-moe-F16.gguf"] = single
    hub.add(REPO, repo_of_files(files))


def download(hub: LocalHub, quant_name: str, **kwargs: object) -> list[Path]:
    quant = next(q for q in list_gguf_quants(REPO, endpoint=hub.url) if q.name == quant_name)
    return download_quant(REPO, quant, paths.default_models_dir(), endpoint=hub.url, **kwargs)  # type: ignore[arg-type]


def test_a_download_appears_only_when_complete_and_delete_removes_just_its_files(
    home: Path, local_hub: LocalHub, split_moe_gguf: list[Path], tiny_moe_gguf: Path
) -> None:
    publish_tiny(local_hub, split_moe_gguf, tiny_moe_gguf)
    cancel = threading.Event()
    with pytest.raises(DownloadCancelled):
        download(local_hub, "Q4_0", cancel=cancel, on_progress=lambda _: cancel.set())
    assert Library().models(include_unavailable=True) == []  # a partial download is not a model

    shards = download(local_hub, "Q4_0")
    download(local_hub, "F16")

    (other, model) = Library().models()  # sorted by name; a new Library: as the app sees it after a restart
    assert model.name == f"{REPO}:Q4_0" and model.source == "download"
    assert model.shards == tuple(shards) and model.path == shards[0]
    assert model.size == sum(p.stat().st_size for p in split_moe_gguf)
    assert (model.architecture, model.quant) == ("qwen3moe", "Q4_0")  # from the GGUF header
    assert other.name == f"{REPO}:F16" and other.quant == "Q4_0"  # the header, not the file name

    Library().delete(model.name)

    assert not any(p.exists() for p in shards) and not shards[0].parent.exists()
    assert [m.name for m in Library().models()] == [other.name]
    marker = json.loads((shards[0].parent.parent / MARKER_NAME).read_text())
    assert list(marker["quants"]) == ["F16"]


def test_a_download_missing_a_shard_is_listed_as_not_loadable(
    home: Path, local_hub: LocalHub, split_moe_gguf: list[Path], tiny_moe_gguf: Path
) -> None:
    publish_tiny(local_hub, split_moe_gguf, tiny_moe_gguf)
    shards = download(local_hub, "Q4_0")
    shards[1].unlink()

    assert Library().models() == []
    (broken,) = Library().models(include_unavailable=True)
    assert shards[1].name in (broken.problem or "") and "download it again" in (broken.problem or "")


def test_delete_never_touches_a_file_outside_the_models_folder(
    home: Path, local_hub: LocalHub, split_moe_gguf: list[Path], tiny_moe_gguf: Path
) -> None:
    publish_tiny(local_hub, split_moe_gguf, tiny_moe_gguf)
    download(local_hub, "F16")
    outside = home / "precious.gguf"
    shutil.copy(tiny_moe_gguf, outside)
    folder = paths.default_models_dir() / "moedesk--Tiny-MoE-GGUF"
    marker = json.loads((folder / MARKER_NAME).read_text())
    marker["quants"]["F16"]["files"] = [{"path": "../../precious.gguf", "size": outside.stat().st_size}]
    (folder / MARKER_NAME).write_text(json.dumps(marker))  # a tampered marker

    with pytest.raises(LibraryError, match="outside the models folder"):
        Library().delete(f"{REPO}:F16")
    assert outside.exists()


def test_an_imported_split_model_is_remembered_by_reference_and_delete_only_forgets_it(
    home: Path, tmp_path: Path, split_moe_gguf: list[Path]
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    copies = [Path(shutil.copy(p, outside)) for p in split_moe_gguf]

    report = Library().import_path(copies[1])  # any shard names the model

    (model,) = report.added
    assert model.path == copies[0] and model.shards == tuple(copies) and model.source == "file"
    assert model.name == "tiny-moe" and model.architecture == "qwen3moe"
    index = json.loads((paths.data_dir() / "library.json").read_text())
    assert [e["path"] for e in index["imports"]] == [str(copies[0])]
    assert not list(paths.data_dir().glob("*.tmp"))
    assert [m.name for m in Library().models()] == ["tiny-moe"]  # remembered across runs
    assert Library().import_path(copies[0]).already == [model]

    Library().delete("tiny-moe")

    assert Library().models() == [] and all(p.exists() for p in copies)


def test_import_refuses_a_model_with_a_missing_shard_or_a_file_that_is_not_gguf(
    home: Path, tmp_path: Path, split_moe_gguf: list[Path]
) -> None:
    shutil.copy(split_moe_gguf[0], tmp_path)
    shutil.copy(split_moe_gguf[1], tmp_path)
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")

    with pytest.raises(MissingShardError, match="tiny-moe-00003-of-00003.gguf"):
        Library().import_path(tmp_path / split_moe_gguf[0].name)
    with pytest.raises(ModelFileError, match="not a GGUF model"):
        Library().import_path(not_gguf)
    with pytest.raises(LibraryError, match="does not exist"):
        Library().import_path(tmp_path / "nowhere.gguf")
    assert Library().models(include_unavailable=True) == []


def test_a_folder_import_adds_every_model_and_names_what_it_skipped(
    home: Path, tmp_path: Path, split_moe_gguf: list[Path], tiny_moe_gguf: Path
) -> None:
    folder = tmp_path / "models"
    (folder / "split").mkdir(parents=True)
    for p in split_moe_gguf:
        shutil.copy(p, folder / "split")
    shutil.copy(tiny_moe_gguf, folder / "one.gguf")
    shutil.copy(tiny_moe_gguf, folder / "mmproj-vision.gguf")  # a projector, not a model
    (folder / "broken.gguf").write_bytes(b"GGUF\x03")

    report = Library().import_path(folder)

    assert sorted(m.name for m in report.added) == ["one", "tiny-moe"]
    assert [(p.name, "damaged" in why or "truncated" in why) for p, why in report.skipped] == [
        ("broken.gguf", True)
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(LibraryError, match="No GGUF model files"):
        Library().import_path(tmp_path / "empty")


def test_an_imported_file_that_moved_is_shown_with_the_problem_until_forgotten(
    home: Path, tmp_path: Path, tiny_moe_gguf: Path
) -> None:
    copy = Path(shutil.copy(tiny_moe_gguf, tmp_path / "mine.gguf"))
    Library().import_path(copy)
    copy.rename(tmp_path / "moved.gguf")

    assert Library().models() == []
    (gone,) = Library().models(include_unavailable=True)
    assert "no longer there" in (gone.problem or "")
    Library().delete("mine")
    assert Library().models(include_unavailable=True) == []


def test_gguf_models_in_the_hugging_face_cache_are_imported_where_they_are(
    home: Path, tmp_path: Path, local_hub: LocalHub, split_moe_gguf: list[Path], tiny_moe_gguf: Path
) -> None:
    files = {f"Q4_0/{p.name}": p for p in split_moe_gguf}
    files.update({"IQ2_XS/tiny-IQ2_XS-00001-of-00002.gguf": tiny_moe_gguf,
                  "IQ2_XS/tiny-IQ2_XS-00002-of-00002.gguf": tiny_moe_gguf})
    local_hub.add(REPO, repo_of_files(files))
    cache = tmp_path / "hf-cache"
    for path in [*list(files)[:3], "IQ2_XS/tiny-IQ2_XS-00001-of-00002.gguf"]:  # one IQ2_XS shard only
        hf_hub_download(REPO, path, cache_dir=cache, endpoint=local_hub.url)

    found = {q.quant.name: q for q in hf_cache_quants(cache)}
    assert set(found) == {"Q4_0", "IQ2_XS"} and found["IQ2_XS"].missing == (2,)
    report = Library().import_hf_cache(cache)

    (model,) = report.added
    assert model.source == "hf-cache" and model.repo == REPO
    assert model.name == f"{REPO}:Q4_0@{found['Q4_0'].revision[:7]}"
    assert model.path.is_relative_to(cache) and len(model.shards) == 3  # by reference, no copy
    assert not paths.default_models_dir().exists()
    assert read_model(model.path).n_layer == 4  # llama.cpp finds the shards side by side
    assert [(p.name, "not in the cache" in why) for p, why in report.skipped] == [
        ("tiny-IQ2_XS-00001-of-00002.gguf", True)
    ]

    Library().delete(model.name)
    assert Library().models() == [] and model.path.exists()


def test_a_damaged_index_is_reported_not_overwritten(home: Path, tiny_moe_gguf: Path) -> None:
    index = paths.data_dir() / "library.json"
    index.parent.mkdir(parents=True)
    index.write_text("{ half written")

    with pytest.raises(LibraryError, match="move it away"):
        Library().import_path(tiny_moe_gguf)
    assert index.read_text() == "{ half written"


def test_reveal_opens_the_platform_file_manager(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")

    assert reveal_command(model, "linux") == ["xdg-open", str(tmp_path)]
    assert reveal_command(model, "darwin") == ["open", "-R", str(model)]
    assert reveal_command(model, "win32") == ["explorer", f"/select,{model}"]


def test_the_library_command_lists_imports_and_deletes(
    home: Path, tmp_path: Path, tiny_moe_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["library"]) == 0
    assert "The library is empty" in capsys.readouterr().out

    assert cli_main(["library", "import", str(tiny_moe_gguf)]) == 0
    assert "imported tiny-moe" in capsys.readouterr().out
    assert cli_main(["library", "list"]) == 0
    listed = capsys.readouterr().out
    assert "tiny-moe" in listed and "qwen3moe" in listed and "Q4_0" in listed

    assert cli_main(["library", "import", str(tmp_path / "missing.gguf")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["library", "delete", "tiny-moe"]) == 0
    assert "forgot tiny-moe" in capsys.readouterr().out
    assert cli_main(["library", "delete", "tiny-moe"]) == 1
    assert "No model named 'tiny-moe'" in capsys.readouterr().err
