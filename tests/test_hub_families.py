"""The quants of every big MoE family's GGUF repos, as the Hub lists them: the local Hub serves file
lists reconstructed from the real repos (names as published; sizes from the repos' pages, users'
download logs and model cards where known, else plausible), and the real huggingface_hub client
lists them. Which repo each listing mirrors is said above it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from app.hub.download import download_quant
from app.hub.folder import local_state
from app.hub.repo import list_gguf_quants
from tests import hub_server
from tests.hub_server import HubRepo, LargeFile, LocalHub

local_hub = hub_server.local_hub  # the fixture, where pytest looks for it

GB, GiB = 10**9, 2**30
Files = dict[str, bytes | LargeFile]


def declared(path: str, size: int) -> LargeFile:
    """A listing-only file: its size and an sha256 declared, never hashed."""
    return LargeFile(size, sha256=hashlib.sha256(path.encode()).hexdigest())


def split_set(folder: str, stem: str, count: int, total: float, numbers: range | None = None) -> Files:
    """``count`` shards of ``total`` bytes as llama-gguf-split --split-max-size cuts them: equal shards
    and a last one about half as big; ``numbers`` for the shards of them that are there."""
    each = int(total / (count - 0.5))
    sizes = [each] * (count - 1) + [int(total) - each * (count - 1)]
    return {
        (path := f"{folder}{stem}-{i:05d}-of-{count:05d}.gguf"): declared(path, sizes[i - 1])
        for i in numbers or range(1, count + 1)
    }


def flat(path: str, size: float) -> Files:
    return {path: declared(path, int(size))}


REPO_FILES: Files = {".gitattributes": b"*.gguf filter=lfs diff=lfs merge=lfs -text\n",
                     "README.md": b"# GGUF\n"}


def unsloth_deepseek_v3_1() -> Files:
    """unsloth/DeepSeek-V3.1-GGUF: a folder per quant (UD-Q2_K_XL's six shard sizes are a user's
    download log), the 1-bit UD-TQ1_0 as one flat file (for Ollama), and the importance matrix as a
    .gguf beside them."""
    ud_q2 = [46.5, 45.2, 46.2, 45.8, 45.5, 8.7]
    return {
        **REPO_FILES,
        **flat("imatrix_unsloth.gguf", 0.9 * GB),
        **flat("DeepSeek-V3.1-UD-TQ1_0.gguf", 170 * GB),
        **split_set("UD-IQ1_S/", "DeepSeek-V3.1-UD-IQ1_S", 4, 192 * GB),
        **{(p := f"UD-Q2_K_XL/DeepSeek-V3.1-UD-Q2_K_XL-{i:05d}-of-00006.gguf"): declared(p, int(gib * GiB))
           for i, gib in enumerate(ud_q2, start=1)},
        **split_set("Q4_K_M/", "DeepSeek-V3.1-Q4_K_M", 9, 405.4 * GB),
        **split_set("Q8_0/", "DeepSeek-V3.1-Q8_0", 15, 713.3 * GB),
        **split_set("BF16/", "DeepSeek-V3.1-BF16", 30, 1342 * GB),
    }


def unsloth_deepseek_r1_0528() -> Files:
    """unsloth/DeepSeek-R1-0528-GGUF: the BF16 in 30 shards (BF16/DeepSeek-R1-0528-BF16-00001-of-00030.gguf),
    a flat UD-TQ1_0."""
    return {
        **REPO_FILES,
        **flat("DeepSeek-R1-0528-UD-TQ1_0.gguf", 162 * GB),
        **split_set("UD-IQ1_S/", "DeepSeek-R1-0528-UD-IQ1_S", 4, 185 * GB),
        **split_set("UD-Q2_K_XL/", "DeepSeek-R1-0528-UD-Q2_K_XL", 6, 251 * GB),
        **split_set("Q4_K_M/", "DeepSeek-R1-0528-Q4_K_M", 9, 404 * GB),
        **split_set("BF16/", "DeepSeek-R1-0528-BF16", 30, 1342 * GB),
    }


def unsloth_kimi_k2_instruct() -> Files:
    """unsloth/Kimi-K2-Instruct-GGUF: dynamic quants only, each in its folder (sizes from the model
    card; the BF16 is another repo)."""
    quants = (("UD-TQ1_0", 5, 245), ("UD-IQ1_S", 6, 281), ("UD-Q2_K_XL", 8, 381), ("UD-Q3_K_XL", 10, 452),
              ("UD-Q4_K_XL", 12, 588))
    files = dict(REPO_FILES)
    for quant, count, gb in quants:
        files |= split_set(f"{quant}/", f"Kimi-K2-Instruct-{quant}", count, gb * GB)
    return files


def unsloth_glm_4_5() -> Files:
    """unsloth/GLM-4.5-GGUF."""
    return {
        **REPO_FILES,
        **split_set("UD-Q2_K_XL/", "GLM-4.5-UD-Q2_K_XL", 3, 135 * GB),
        **split_set("Q4_K_M/", "GLM-4.5-Q4_K_M", 5, 219 * GB),
        **split_set("BF16/", "GLM-4.5-BF16", 15, 717 * GB),
    }


def unsloth_glm_4_5_air() -> Files:
    """unsloth/GLM-4.5-Air-GGUF: quants under 50 GB are flat files (GLM-4.5-Air-UD-Q2_K_XL.gguf,
    47,444,888,640 bytes), larger ones in folders."""
    return {
        **REPO_FILES,
        **flat("GLM-4.5-Air-UD-Q2_K_XL.gguf", 47_444_888_640),
        **flat("GLM-4.5-Air-Q3_K_M.gguf", 57.4 * GB),
        **split_set("Q4_K_M/", "GLM-4.5-Air-Q4_K_M", 2, 72.9 * GB),
        **split_set("BF16/", "GLM-4.5-Air-BF16", 5, 221 * GB),
    }


def unsloth_qwen3_235b_instruct_2507() -> Files:
    """unsloth/Qwen3-235B-A22B-Instruct-2507-GGUF
    (UD-Q2_K_XL/Qwen3-235B-A22B-Instruct-2507-UD-Q2_K_XL-00001-of-00002.gguf)."""
    return {
        **REPO_FILES,
        **flat("Qwen3-235B-A22B-Instruct-2507-UD-TQ1_0.gguf", 48.5 * GB),
        **split_set("UD-Q2_K_XL/", "Qwen3-235B-A22B-Instruct-2507-UD-Q2_K_XL", 2, 88.8 * GB),
        **split_set("Q4_K_M/", "Qwen3-235B-A22B-Instruct-2507-Q4_K_M", 3, 142 * GB),
        **split_set("BF16/", "Qwen3-235B-A22B-Instruct-2507-BF16", 10, 470 * GB),
    }


def ggml_org_gpt_oss_120b() -> Files:
    """ggml-org/gpt-oss-120b-GGUF: the MXFP4 release flat in three shards."""
    return {**REPO_FILES, **split_set("", "gpt-oss-120b-mxfp4", 3, 63.4 * GB)}


def ggml_org_gpt_oss_20b() -> Files:
    """ggml-org/gpt-oss-20b-GGUF: one file."""
    return {**REPO_FILES, **flat("gpt-oss-20b-mxfp4.gguf", 12.1 * GB)}


def unsloth_gpt_oss_120b() -> Files:
    """unsloth/gpt-oss-120b-GGUF: every quant keeps the experts MXFP4, so all are ~62-65 GB; the F16 is
    one flat file of 65,369,017,728 bytes, the others two shards in a folder (sizes: tensor bytes
    summed from the repo's headers by another project, Q4_K_M plausible)."""
    return {
        **REPO_FILES,
        **flat("gpt-oss-120b-F16.gguf", 65_369_017_728),
        **split_set("Q3_K_S/", "gpt-oss-120b-Q3_K_S", 2, 62.56 * GB),
        **split_set("Q4_K_M/", "gpt-oss-120b-Q4_K_M", 2, 62.9 * GB),
        **split_set("UD-Q4_K_XL/", "gpt-oss-120b-UD-Q4_K_XL", 2, 63.01 * GB),
        **split_set("Q8_0/", "gpt-oss-120b-Q8_0", 2, 63.38 * GB),
    }


def listed(hub: LocalHub, repo_id: str, files: Files) -> list[tuple[str, int, float]]:
    hub.add(repo_id, HubRepo(files))
    return [(q.name, q.shard_count, round(q.total_size / GB, 1))
            for q in list_gguf_quants(repo_id, endpoint=hub.url)]


def test_unsloth_repos_list_one_quant_per_folder_or_flat_file_smallest_first(local_hub: LocalHub) -> None:
    assert listed(local_hub, "unsloth/DeepSeek-V3.1-GGUF", unsloth_deepseek_v3_1()) == [
        ("UD-TQ1_0", 1, 170.0), ("UD-IQ1_S", 4, 192.0), ("UD-Q2_K_XL", 6, 255.4), ("Q4_K_M", 9, 405.4),
        ("Q8_0", 15, 713.3), ("BF16", 30, 1342.0)]  # not the imatrix .gguf, not README/.gitattributes
    assert listed(local_hub, "unsloth/DeepSeek-R1-0528-GGUF", unsloth_deepseek_r1_0528()) == [
        ("UD-TQ1_0", 1, 162.0), ("UD-IQ1_S", 4, 185.0), ("UD-Q2_K_XL", 6, 251.0), ("Q4_K_M", 9, 404.0),
        ("BF16", 30, 1342.0)]
    assert listed(local_hub, "unsloth/Kimi-K2-Instruct-GGUF", unsloth_kimi_k2_instruct()) == [
        ("UD-TQ1_0", 5, 245.0), ("UD-IQ1_S", 6, 281.0), ("UD-Q2_K_XL", 8, 381.0), ("UD-Q3_K_XL", 10, 452.0),
        ("UD-Q4_K_XL", 12, 588.0)]
    assert listed(local_hub, "unsloth/GLM-4.5-GGUF", unsloth_glm_4_5()) == [
        ("UD-Q2_K_XL", 3, 135.0), ("Q4_K_M", 5, 219.0), ("BF16", 15, 717.0)]
    assert listed(local_hub, "unsloth/GLM-4.5-Air-GGUF", unsloth_glm_4_5_air()) == [
        ("UD-Q2_K_XL", 1, 47.4), ("Q3_K_M", 1, 57.4), ("Q4_K_M", 2, 72.9), ("BF16", 5, 221.0)]
    assert listed(local_hub, "unsloth/Qwen3-235B-A22B-Instruct-2507-GGUF",
                  unsloth_qwen3_235b_instruct_2507()) == [
        ("UD-TQ1_0", 1, 48.5), ("UD-Q2_K_XL", 2, 88.8), ("Q4_K_M", 3, 142.0), ("BF16", 10, 470.0)]


def test_a_30_shard_bf16_set_is_one_quant_loaded_from_its_first_shard(local_hub: LocalHub) -> None:
    local_hub.add("unsloth/DeepSeek-R1-0528-GGUF", HubRepo(unsloth_deepseek_r1_0528()))

    bf16 = list_gguf_quants("unsloth/DeepSeek-R1-0528-GGUF", endpoint=local_hub.url)[-1]

    assert bf16.complete and len(bf16.files) == 30
    assert bf16.first_file == "BF16/DeepSeek-R1-0528-BF16-00001-of-00030.gguf"
    assert [f.path[-20:] for f in bf16.files[8:11]] == [
        "-00009-of-00030.gguf", "-00010-of-00030.gguf", "-00011-of-00030.gguf"]  # in number order


def test_gpt_oss_quants_are_named_as_published_mxfp4_and_f16_included(local_hub: LocalHub) -> None:
    assert listed(local_hub, "ggml-org/gpt-oss-120b-GGUF", ggml_org_gpt_oss_120b()) == [("MXFP4", 3, 63.4)]
    assert listed(local_hub, "ggml-org/gpt-oss-20b-GGUF", ggml_org_gpt_oss_20b()) == [("MXFP4", 1, 12.1)]
    # all within 3 GB of each other: the experts are MXFP4 in every one, "F16" included
    assert listed(local_hub, "unsloth/gpt-oss-120b-GGUF", unsloth_gpt_oss_120b()) == [
        ("Q3_K_S", 2, 62.6), ("Q4_K_M", 2, 62.9), ("UD-Q4_K_XL", 2, 63.0), ("Q8_0", 2, 63.4),
        ("F16", 1, 65.4)]


def test_one_quant_type_twice_in_a_repo_gets_a_name_for_each(local_hub: LocalHub) -> None:
    """Layouts of the repos above as publishers leave them between uploads: the gpt-oss F16 both flat
    and split in a folder, a DeepSeek BF16 in its old folder and its new one, a Q8_0 re-split in more
    shards beside the old shards. The Models page, the download marker and --quant find a quant by
    its name, so each must have its own."""
    gpt_oss = {**unsloth_gpt_oss_120b(), **split_set("F16/", "gpt-oss-120b-F16", 2, 65.37 * GB)}
    deepseek = {
        **unsloth_deepseek_r1_0528(),
        **split_set("DeepSeek-R1-0528-BF16/", "DeepSeek-R1-0528-BF16", 30, 1341 * GB),
        **split_set("Q8_0/", "DeepSeek-R1-0528-Q8_0", 15, 713 * GB),
        **split_set("Q8_0/", "DeepSeek-R1-0528-Q8_0", 16, 713.2 * GB),
    }

    gpt_oss_names = [name for name, _, _ in listed(local_hub, "unsloth/gpt-oss-120b-GGUF", gpt_oss)]
    deepseek_names = [name for name, _, _ in listed(local_hub, "unsloth/DeepSeek-R1-0528-GGUF", deepseek)]

    assert gpt_oss_names == ["Q3_K_S", "Q4_K_M", "UD-Q4_K_XL", "Q8_0", "F16 (top level)", "F16 (F16/)"]
    assert deepseek_names == ["UD-TQ1_0", "UD-IQ1_S", "UD-Q2_K_XL", "Q4_K_M", "Q8_0 (15 shards)",
                              "Q8_0 (16 shards)", "BF16 (DeepSeek-R1-0528-BF16/)", "BF16 (BF16/)"]


def test_quants_with_missing_shards_come_last(local_hub: LocalHub) -> None:
    """A BF16 upload stopped halfway (its size is only what is there), and one set's shards spread
    over two folders, which llama.cpp cannot load from its first shard: neither is offered first."""
    files = {
        **unsloth_glm_4_5(),
        **split_set("Q8_0/", "GLM-4.5-Q8_0", 8, 381 * GB, numbers=range(1, 4)),
        **split_set("UD-Q4_K_XL/", "GLM-4.5-UD-Q4_K_XL", 5, 204 * GB, numbers=range(1, 3)),
        **split_set("UD-Q4_K_XL-part2/", "GLM-4.5-UD-Q4_K_XL", 5, 204 * GB, numbers=range(3, 6)),
    }
    local_hub.add("unsloth/GLM-4.5-GGUF", HubRepo(files))

    quants = list_gguf_quants("unsloth/GLM-4.5-GGUF", endpoint=local_hub.url)

    assert [(q.name, q.missing_shards) for q in quants] == [
        ("UD-Q2_K_XL", ()), ("Q4_K_M", ()), ("BF16", ()),
        ("UD-Q4_K_XL (UD-Q4_K_XL/)", (3, 4, 5)), ("UD-Q4_K_XL (UD-Q4_K_XL-part2/)", (1, 2)),
        ("Q8_0", (4, 5, 6, 7, 8))]


def test_both_copies_of_a_quant_type_download_side_by_side_and_stay_complete(
    local_hub: LocalHub, tmp_path: Path
) -> None:
    files: Files = {"gpt-oss-20b-F16.gguf": b"GGUF" + b"flat" * 1000}
    files |= {f"F16/gpt-oss-20b-F16-0000{i}-of-00002.gguf": b"GGUF" + bytes([i]) * 3000 for i in (1, 2)}
    local_hub.add("unsloth/gpt-oss-20b-GGUF", HubRepo(files))
    flat_f16, split_f16 = list_gguf_quants("unsloth/gpt-oss-20b-GGUF", endpoint=local_hub.url)

    for quant in (flat_f16, split_f16):
        download_quant("unsloth/gpt-oss-20b-GGUF", quant, tmp_path, endpoint=local_hub.url)

    # each is in the download marker under its own name: neither download replaced the other
    assert local_state("unsloth/gpt-oss-20b-GGUF", flat_f16, tmp_path).complete
    assert local_state("unsloth/gpt-oss-20b-GGUF", split_f16, tmp_path).complete
