"""Browsing GGUF repos on the Hub: a local Hub server, the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import get_session

from app.hub.errors import GatedRepoError, HubUnreachableError, RepoNotFoundError
from app.hub.repo import check_download_access, list_gguf_quants, parse_repo_id, search_gguf_repos
from tests import hub_server
from tests.hub_server import HubRepo, LargeFile, LocalHub

local_hub = hub_server.local_hub  # the fixture, where pytest looks for it

GB = 10**9


def deepseek_repo() -> HubRepo:
    """unsloth-style: one folder per quant, big quants split in shards (sizes declared, not hashed)."""
    files: dict[str, bytes | LargeFile] = {
        "README.md": b"# DeepSeek-R1 GGUF\n",
        ".gitattributes": b"*.gguf lfs\n",
    }
    for quant, shards, shard_gb in (("UD-IQ1_S", 4, 33), ("Q4_K_M", 9, 45), ("Q2_K", 5, 46)):
        for i in range(1, shards + 1):
            sha = hashlib.sha256(f"{quant}{i}".encode()).hexdigest()
            path = f"{quant}/DeepSeek-R1-{quant}-{i:05d}-of-{shards:05d}.gguf"
            files[path] = LargeFile(shard_gb * GB, sha256=sha)
    return HubRepo(files, downloads=90_000, likes=1200, tags=["deepseek"])


def qwen_repo() -> HubRepo:
    """bartowski-style: flat files named after the quant, one split quant, a vision projector."""
    return HubRepo(
        {
            "Qwen3-30B-A3B-Q4_K_M.gguf": b"GGUF" + b"4" * 400,
            "Qwen3-30B-A3B-IQ4_XS.gguf": b"GGUF" + b"x" * 300,
            "Qwen3-30B-A3B-Q8_0.gguf": b"GGUF" + b"8" * 800,
            "Qwen3-30B-A3B-UD-Q2_K_XL-00001-of-00002.gguf": b"GGUF" + b"a" * 100,
            "Qwen3-30B-A3B-UD-Q2_K_XL-00002-of-00002.gguf": b"GGUF" + b"b" * 100,
            "mmproj-Qwen3-30B-A3B-F16.gguf": b"GGUF" + b"m" * 50,
            "Qwen3-30B-A3B.imatrix": b"imatrix",
            "README.md": b"# Qwen3 GGUF\n",
        },
        downloads=50_000,
        likes=300,
        last_modified="2025-05-01T00:00:00.000Z",
    )


def test_quant_folders_with_split_shards_are_grouped_and_sorted_by_size(local_hub: LocalHub) -> None:
    local_hub.add("unsloth/DeepSeek-R1-GGUF", deepseek_repo())

    quants = list_gguf_quants("unsloth/DeepSeek-R1-GGUF", endpoint=local_hub.url)

    assert [q.name for q in quants] == ["UD-IQ1_S", "Q2_K", "Q4_K_M"]
    q4 = quants[2]
    assert q4.shard_count == 9 and len(q4.files) == 9 and q4.complete
    assert q4.total_size == 9 * 45 * GB
    assert q4.first_file == "Q4_K_M/DeepSeek-R1-Q4_K_M-00001-of-00009.gguf"
    assert q4.files[8].path.endswith("-00009-of-00009.gguf")
    assert q4.files[0].sha256 == hashlib.sha256(b"Q4_K_M1").hexdigest()


def test_flat_quants_skip_mmproj_and_non_gguf_files(local_hub: LocalHub) -> None:
    repo = local_hub.add("bartowski/Qwen3-30B-A3B-GGUF", qwen_repo())

    quants = list_gguf_quants("bartowski/Qwen3-30B-A3B-GGUF", endpoint=local_hub.url)

    assert [(q.name, q.total_size, q.shard_count) for q in quants] == [
        ("UD-Q2_K_XL", 208, 2),
        ("IQ4_XS", 304, 1),
        ("Q4_K_M", 404, 1),
        ("Q8_0", 804, 1),
    ]
    q8 = quants[-1]
    assert q8.files[0].sha256 == hashlib.sha256(repo.files["Qwen3-30B-A3B-Q8_0.gguf"]).hexdigest()
    assert all("mmproj" not in f.path for q in quants for f in q.files)


def test_a_missing_shard_is_flagged(local_hub: LocalHub) -> None:
    local_hub.add(
        "someone/broken-GGUF",
        HubRepo({f"Q3_K_M/model-Q3_K_M-0000{i}-of-00003.gguf": b"GGUF" + bytes(10) for i in (1, 3)}),
    )

    (quant,) = list_gguf_quants("someone/broken-GGUF", endpoint=local_hub.url)

    assert quant.name == "Q3_K_M" and quant.shard_count == 3
    assert not quant.complete and quant.missing_shards == (2,)
    assert [f.path for f in quant.files] == [
        "Q3_K_M/model-Q3_K_M-00001-of-00003.gguf",
        "Q3_K_M/model-Q3_K_M-00003-of-00003.gguf",
    ]


def test_search_finds_gguf_repos_sorted_by_downloads_or_likes(local_hub: LocalHub) -> None:
    local_hub.add("unsloth/DeepSeek-R1-GGUF", deepseek_repo())
    local_hub.add("bartowski/Qwen3-30B-A3B-GGUF", qwen_repo())
    local_hub.add("Qwen/Qwen3-30B-A3B", HubRepo({"model.safetensors": b"st"}, downloads=10**6))  # not GGUF
    local_hub.add("me/Qwen3-private-GGUF", HubRepo({"q-Q4_0.gguf": b"GGUF"}, private=True))

    by_downloads = search_gguf_repos("", endpoint=local_hub.url)
    qwen = search_gguf_repos("qwen3", sort="likes", limit=5, endpoint=local_hub.url)

    assert [r.repo_id for r in by_downloads] == ["unsloth/DeepSeek-R1-GGUF", "bartowski/Qwen3-30B-A3B-GGUF"]
    assert by_downloads[0].downloads == 90_000 and by_downloads[0].likes == 1200
    assert [r.repo_id for r in qwen] == ["bartowski/Qwen3-30B-A3B-GGUF"]
    assert qwen[0].last_modified is not None and qwen[0].last_modified.year == 2025
    assert search_gguf_repos("deepseek", limit=1, endpoint=local_hub.url)[0].gated is False


def test_unknown_or_private_repo_is_not_found(local_hub: LocalHub) -> None:
    local_hub.add(
        "me/private-GGUF", HubRepo({"m-Q4_0.gguf": b"GGUF"}, private=True, tokens=frozenset({"hf_me"}))
    )

    with pytest.raises(RepoNotFoundError, match="no-such/repo"):
        list_gguf_quants("no-such/repo", endpoint=local_hub.url)
    with pytest.raises(RepoNotFoundError, match="me/private-GGUF"):
        list_gguf_quants("me/private-GGUF", token="hf_other", endpoint=local_hub.url)
    assert list_gguf_quants("me/private-GGUF", token="hf_me", endpoint=local_hub.url)[0].name == "Q4_0"


def test_gated_repo_lists_quants_but_needs_a_granted_token_to_download(local_hub: LocalHub, tmp_path) -> None:
    local_hub.add(
        "meta/Llama-GGUF",
        HubRepo({"Llama-Q4_K_M.gguf": b"GGUF" + bytes(64)}, gated=True, tokens=frozenset({"hf_granted"})),
    )

    # Like the Hub: the file list of a gated repo is public
    assert [q.name for q in list_gguf_quants("meta/Llama-GGUF", endpoint=local_hub.url)] == ["Q4_K_M"]
    with pytest.raises(GatedRepoError, match="meta/Llama-GGUF.*sign in") as no_token:
        check_download_access("meta/Llama-GGUF", token=None, endpoint=local_hub.url)
    assert no_token.value.repo_url == f"{local_hub.url}/meta/Llama-GGUF" and not no_token.value.had_token
    with pytest.raises(GatedRepoError, match="not been granted access"):
        check_download_access("meta/Llama-GGUF", token="hf_someone_else", endpoint=local_hub.url)
    with pytest.raises(hf_errors.GatedRepoError):  # the download itself is refused too
        hf_hub_download("meta/Llama-GGUF", "Llama-Q4_K_M.gguf", endpoint=local_hub.url, cache_dir=tmp_path)

    check_download_access("meta/Llama-GGUF", token="hf_granted", endpoint=local_hub.url)
    path = hf_hub_download(
        "meta/Llama-GGUF", "Llama-Q4_K_M.gguf", token="hf_granted", endpoint=local_hub.url, cache_dir=tmp_path
    )
    assert open(path, "rb").read() == b"GGUF" + bytes(64)


def test_hub_down_fails_fast_with_a_clear_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"

    started = time.monotonic()
    with pytest.raises(HubUnreachableError, match="Cannot reach the Hub"):
        list_gguf_quants("unsloth/DeepSeek-R1-GGUF", endpoint=endpoint)
    with pytest.raises(HubUnreachableError):
        search_gguf_repos("deepseek", endpoint=endpoint)
    assert time.monotonic() - started < 5


# -- the server speaks the Hub's API as huggingface_hub uses it (what later download code relies on) --


def test_server_answers_huggingface_hub_tree_paths_info_and_list_models(local_hub: LocalHub) -> None:
    local_hub.add("unsloth/DeepSeek-R1-GGUF", deepseek_repo())
    api = HfApi(endpoint=local_hub.url)

    tree = {e.path: e for e in api.list_repo_tree("unsloth/DeepSeek-R1-GGUF", recursive=True)}
    top = {e.path for e in api.list_repo_tree("unsloth/DeepSeek-R1-GGUF")}
    shard = tree["Q2_K/DeepSeek-R1-Q2_K-00001-of-00005.gguf"]
    (info,) = api.get_paths_info("unsloth/DeepSeek-R1-GGUF", [shard.path])
    (hit,) = api.list_models(search="DeepSeek", filter="gguf", sort="downloads", limit=3)

    assert "Q4_K_M" in top and shard.path not in top
    assert (
        shard.size == 46 * GB
        and shard.lfs is not None
        and shard.lfs.sha256 == hashlib.sha256(b"Q2_K1").hexdigest()
    )
    assert info.lfs == shard.lfs and info.blob_id == shard.blob_id
    assert hit.id == "unsloth/DeepSeek-R1-GGUF" and hit.downloads == 90_000
    with pytest.raises(hf_errors.RemoteEntryNotFoundError):
        list(api.list_repo_tree("unsloth/DeepSeek-R1-GGUF", "Q9_K"))
    with pytest.raises(hf_errors.RevisionNotFoundError):
        api.model_info("unsloth/DeepSeek-R1-GGUF", revision="v9")


def test_server_resolves_lfs_files_through_a_cdn_redirect_with_ranges(local_hub: LocalHub, tmp_path) -> None:
    big = LargeFile(3_000_000, pattern=b"0123456789")
    local_hub.add("me/big-GGUF", HubRepo({"m-Q8_0.gguf": big, "README.md": b"hi"}))
    url = f"{local_hub.url}/me/big-GGUF/resolve/main/m-Q8_0.gguf"

    head = get_session().head(url, follow_redirects=False)
    ranged = get_session().get(url, headers={"Range": "bytes=1000005-1000014"}, follow_redirects=True)
    path = hf_hub_download("me/big-GGUF", "m-Q8_0.gguf", endpoint=local_hub.url, cache_dir=tmp_path)

    assert head.status_code == 302 and head.headers["X-Linked-Size"] == "3000000"
    assert head.headers["Location"].startswith("http://localhost:")  # another origin, like the Hub's CDN
    assert head.headers["X-Repo-Commit"] == local_hub.repos["me/big-GGUF"].sha
    assert ranged.status_code == 206 and ranged.content == b"5678901234"
    assert ranged.headers["Content-Range"] == "bytes 1000005-1000014/3000000"
    data = open(path, "rb").read()
    assert len(data) == 3_000_000
    assert hashlib.sha256(data).hexdigest() == head.headers["X-Linked-Etag"].strip('"')
    with pytest.raises(hf_errors.RemoteEntryNotFoundError):
        hf_hub_download("me/big-GGUF", "nope.gguf", endpoint=local_hub.url, cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "repo_id"),
    [
        ("unsloth/Qwen3-30B-A3B-GGUF", "unsloth/Qwen3-30B-A3B-GGUF"),
        ("  https://huggingface.co/unsloth/DeepSeek-R1-GGUF/tree/main/Q4_K_M  ", "unsloth/DeepSeek-R1-GGUF"),
        ("https://huggingface.co/bartowski/m-GGUF/blob/main/m-Q4_K_M.gguf", "bartowski/m-GGUF"),
        ("hf.co/unsloth/gpt-oss-120b-GGUF", "unsloth/gpt-oss-120b-GGUF"),
        ("http://127.0.0.1:8080/owner/name/", "owner/name"),  # another endpoint (HF_ENDPOINT)
        ("qwen3 moe", None),
        ("owner/name/extra", None),
        ("https://huggingface.co/unsloth", None),
        ("own er/name", None),
    ],
)
def test_a_repo_is_recognised_by_its_id_or_its_hub_url(text: str, repo_id: str | None) -> None:
    assert parse_repo_id(text) == repo_id
