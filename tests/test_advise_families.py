"""The advisor's verdict for each quant of a Hub repo, read from the quants' GGUF headers over HTTP
ranges: the local Hub serves real headers (the tensor tables llama.cpp's converter and gguf-split
write for DeepSeek-V3.1 and gpt-oss-120b) in front of tensor data that is never read, at the real
file sizes."""

from __future__ import annotations

import hashlib

from app.advisor.report import advise_repo, repo_lines
from app.hardware.model import Cpu, Gpu, Hardware, Memory
from tests import gguf_bytes as gb
from tests import hub_server
from tests.hub_server import HubRepo, LargeFile, LocalHub

local_hub = hub_server.local_hub  # the fixture, where pytest looks for it

GB, GiB = 10**9, 2**30
# ggml types: (id, block size, bytes per block), as tests/gguf_bytes spells them
BF16, MXFP4 = (30, 1, 2), (39, 32, 17)
KV = list[tuple[str, int, object]]


def tokens(n: int) -> tuple[str, int, object]:
    return ("tokenizer.ggml.tokens", gb.ARRAY, (gb.STRING, [f"t{i}" for i in range(n)]))


def deepseek_v3_1(experts: tuple[int, int, int]) -> tuple[KV, list[gb.Tensor]]:
    """DeepSeek-V3.1 (671B): 61 layers, the first 3 dense, 256 routed experts (top-8) and one shared,
    multi-head latent attention; the rest Q8_0 as in unsloth's Q8_0."""
    arch, n_embd, n_vocab, n_head, n_exp, ff, ff_exp, q_lora, kv_lora, rope, nope = (
        "deepseek2", 7168, 129280, 128, 256, 18432, 2048, 1536, 512, 64, 128)
    kv: KV = [("general.architecture", gb.STRING, arch), ("general.name", gb.STRING, "DeepSeek V3.1")]
    kv += [(f"{arch}.{key}", gb.UINT32, value) for key, value in (
        ("block_count", 61), ("context_length", 163840), ("embedding_length", n_embd),
        ("feed_forward_length", ff), ("attention.head_count", n_head), ("attention.head_count_kv", 1),
        ("attention.key_length", kv_lora + rope), ("attention.value_length", kv_lora),
        ("attention.key_length_mla", nope + rope), ("attention.value_length_mla", nope),
        ("attention.q_lora_rank", q_lora), ("attention.kv_lora_rank", kv_lora),
        ("rope.dimension_count", rope), ("leading_dense_block_count", 3), ("expert_count", n_exp),
        ("expert_used_count", 8), ("expert_shared_count", 1), ("expert_feed_forward_length", ff_exp),
        ("vocab_size", n_vocab))]
    kv.append(tokens(n_vocab))
    t = gb.Tensor
    tensors = [t("token_embd.weight", [n_embd, n_vocab], gb.Q8_0)]
    for i in range(61):
        b = f"blk.{i}."
        tensors += [t(b + "attn_norm.weight", [n_embd]), t(b + "attn_q_a_norm.weight", [q_lora]),
                    t(b + "attn_kv_a_norm.weight", [kv_lora]),
                    t(b + "attn_q_a.weight", [n_embd, q_lora], gb.Q8_0),
                    t(b + "attn_q_b.weight", [q_lora, n_head * (nope + rope)], gb.Q8_0),
                    t(b + "attn_kv_a_mqa.weight", [n_embd, kv_lora + rope], gb.Q8_0),
                    t(b + "attn_k_b.weight", [nope, kv_lora, n_head], gb.Q8_0),
                    t(b + "attn_v_b.weight", [kv_lora, nope, n_head], gb.Q8_0),
                    t(b + "attn_output.weight", [n_head * nope, n_embd], gb.Q8_0),
                    t(b + "ffn_norm.weight", [n_embd])]
        if i < 3:
            tensors += [t(b + f"ffn_{m}.weight", [n_embd, ff] if m != "down" else [ff, n_embd], gb.Q8_0)
                        for m in ("gate", "up", "down")]
            continue
        tensors += [t(b + "ffn_gate_inp.weight", [n_embd, n_exp]), t(b + "exp_probs_b.bias", [n_exp]),
                    t(b + "ffn_gate_exps.weight", [n_embd, ff_exp, n_exp], experts),
                    t(b + "ffn_up_exps.weight", [n_embd, ff_exp, n_exp], experts),
                    t(b + "ffn_down_exps.weight", [ff_exp, n_embd, n_exp], experts),
                    t(b + "ffn_gate_shexp.weight", [n_embd, ff_exp], gb.Q8_0),
                    t(b + "ffn_up_shexp.weight", [n_embd, ff_exp], gb.Q8_0),
                    t(b + "ffn_down_shexp.weight", [ff_exp, n_embd], gb.Q8_0)]
    return kv, tensors + [t("output_norm.weight", [n_embd]), t("output.weight", [n_embd, n_vocab], gb.Q8_0)]


def gpt_oss_120b(experts: tuple[int, int, int], rest: tuple[int, int, int]) -> tuple[KV, list[gb.Tensor]]:
    """gpt-oss-120b: 36 layers of 128 experts (top-4), grouped-query attention with sinks."""
    arch, n_embd, n_vocab, n_exp, n_head, n_kv, head = "gpt-oss", 2880, 201088, 128, 64, 8, 64
    kv: KV = [("general.architecture", gb.STRING, arch), ("general.name", gb.STRING, "Gpt-Oss-120B")]
    kv += [(f"{arch}.{key}", gb.UINT32, value) for key, value in (
        ("block_count", 36), ("context_length", 131072), ("embedding_length", n_embd),
        ("feed_forward_length", n_embd), ("expert_feed_forward_length", n_embd),
        ("attention.head_count", n_head), ("attention.head_count_kv", n_kv), ("attention.key_length", head),
        ("attention.value_length", head), ("attention.sliding_window", 128), ("expert_count", n_exp),
        ("expert_used_count", 4))]
    kv.append(tokens(n_vocab))
    t = gb.Tensor
    tensors = [t("token_embd.weight", [n_embd, n_vocab], rest)]
    for i in range(36):
        b = f"blk.{i}."
        tensors += [t(b + "attn_norm.weight", [n_embd]), t(b + "attn_sinks.weight", [n_head]),
                    t(b + "attn_q.weight", [n_embd, n_head * head], rest),
                    t(b + "attn_k.weight", [n_embd, n_kv * head], rest),
                    t(b + "attn_v.weight", [n_embd, n_kv * head], rest),
                    t(b + "attn_output.weight", [n_head * head, n_embd], rest),
                    t(b + "post_attention_norm.weight", [n_embd]),
                    t(b + "ffn_gate_inp.weight", [n_embd, n_exp]), t(b + "ffn_gate_inp.bias", [n_exp])]
        for matrix in ("gate", "up", "down"):
            tensors += [t(b + f"ffn_{matrix}_exps.weight", [n_embd, n_embd, n_exp], experts),
                        t(b + f"ffn_{matrix}_exps.bias", [n_embd, n_exp])]
    return kv, tensors + [t("output_norm.weight", [n_embd]), t("output.weight", [n_embd, n_vocab], rest)]


def split_files(path_stem: str, kv: KV, tensors: list[gb.Tensor], count: int) -> dict[str, LargeFile]:
    """The files llama-gguf-split writes: the metadata in the first, the tensors in order cut into
    shards of about equal bytes, split.no/count/tensors.count in each; one file when ``count`` is 1."""
    total = sum(t.n_bytes for t in tensors)
    shards: list[list[gb.Tensor]] = [[] for _ in range(count)]
    done = 0
    for tensor in tensors:
        shards[min(done * count // total, count - 1)].append(tensor)
        done += tensor.n_bytes
    files = {}
    for i, shard in enumerate(shards):
        split: KV = [("split.no", gb.UINT16, i), ("split.count", gb.UINT16, count),
                     ("split.tensors.count", gb.INT32, len(tensors))]
        head, end = gb.header_bytes(gb.Header((kv if i == 0 else []) + (split if count > 1 else []), shard))
        path = f"{path_stem}-{i + 1:05d}-of-{count:05d}.gguf" if count > 1 else f"{path_stem}.gguf"
        sha256 = hashlib.sha256(path.encode()).hexdigest()  # declared: the data is never read
        files[path] = LargeFile(end, pattern=b"\0", sha256=sha256, head=head)
    return files


def machine(vram_gib: int, ram_gib: int) -> Hardware:
    gpu = Gpu("nvidia", "NVIDIA GeForce RTX 4090", vram_gib * GiB, vram_gib * GiB, compute_capability=(8, 9))
    ram = Memory(ram_gib * GiB, ram_gib * GiB, 0)
    return Hardware(Cpu("EPYC", "x86_64", 32, 64, ("avx2",)), ram, [], [gpu])


def test_a_15_shard_deepseek_set_is_planned_from_every_shard_header_read_side_by_side(
    local_hub: LocalHub,
) -> None:
    """unsloth/DeepSeek-V3.1-GGUF's Q8_0: 15 shards of ~48 GB (Q8_0/DeepSeek-V3.1-Q8_0-00001-of-00015.gguf),
    the importance matrix and README beside them. The experts' sizes are in the tensor tables of all
    15 shards, so all are read; a server 50 ms away answers them side by side, not one by one."""
    files: dict[str, bytes | LargeFile] = {
        "README.md": b"# DeepSeek-V3.1 GGUF\n", "imatrix_unsloth.gguf": b"GGUF imatrix",
        **split_files("Q8_0/DeepSeek-V3.1-Q8_0", *deepseek_v3_1(gb.Q8_0), 15)}
    local_hub.add("unsloth/DeepSeek-V3.1-GGUF", HubRepo(files))
    local_hub.latency_s = 0.05

    (advice,) = advise_repo("unsloth/DeepSeek-V3.1-GGUF", machine(24, 1024), 16384, endpoint=local_hub.url)

    assert advice.quant == "Q8_0" and 700 * GB < advice.size < 720 * GB
    assert advice.plan is not None and advice.plan.verdict == "fits_with_expert_offload"
    weights = sum(m.weights for m in advice.plan.memory)
    assert advice.size - 20 * 2**20 < weights <= advice.size  # the tensors of all 15 shards
    resolved = {path for method, path in local_hub.requests if "/resolve/main/Q8_0/" in path}
    assert len(resolved) == 15
    assert local_hub.peak_in_flight >= 4
    assert local_hub.bytes_served < 16 * 2**20  # headers only: the vocabulary and 15 tensor tables


def test_gpt_oss_f16_is_planned_by_its_mxfp4_experts_size_not_its_name(local_hub: LocalHub) -> None:
    """unsloth/gpt-oss-120b-GGUF's gpt-oss-120b-F16.gguf keeps OpenAI's MXFP4 experts (only the rest
    is F16): 65 GB, not the 234 GB its name suggests, so it fits a 24 GB GPU with 96 GB of RAM, like
    ggml-org/gpt-oss-120b-GGUF's three gpt-oss-120b-mxfp4 shards (the rest BF16). An F16 whose experts
    are F16 too, under the same name, would not."""
    local_hub.add("unsloth/gpt-oss-120b-GGUF", HubRepo({
        "README.md": b"# gpt-oss-120b GGUF\n",
        **split_files("gpt-oss-120b-F16", *gpt_oss_120b(MXFP4, gb.F16), 1)}))
    local_hub.add("ggml-org/gpt-oss-120b-GGUF", HubRepo(
        split_files("gpt-oss-120b-mxfp4", *gpt_oss_120b(MXFP4, BF16), 3)))
    local_hub.add("someone/gpt-oss-120b-dense-GGUF", HubRepo(
        split_files("F16/gpt-oss-120b-F16", *gpt_oss_120b(gb.F16, gb.F16), 5)))
    box = machine(24, 96)

    (f16,) = advise_repo("unsloth/gpt-oss-120b-GGUF", box, 16384, endpoint=local_hub.url)
    (mxfp4,) = advise_repo("ggml-org/gpt-oss-120b-GGUF", box, 16384, endpoint=local_hub.url)
    (dense,) = advise_repo("someone/gpt-oss-120b-dense-GGUF", box, 16384, endpoint=local_hub.url)

    assert (f16.quant, mxfp4.quant) == ("F16", "MXFP4")
    assert 64 * GB < f16.size < 66 * GB and 64 * GB < mxfp4.size < 66 * GB
    assert f16.plan is not None and mxfp4.plan is not None
    assert f16.plan.verdict == mxfp4.plan.verdict == "fits_with_expert_offload"
    assert dense.quant == "F16" and dense.size > 230 * GB
    assert dense.plan is not None and dense.plan.verdict not in ("fits_on_gpu", "fits_with_expert_offload")


def test_both_f16_uploads_of_gpt_oss_get_a_verdict_each_in_aligned_rows(local_hub: LocalHub) -> None:
    """The F16 as one flat file and, beside it, split in an F16/ folder (as an upload in progress
    leaves a repo): each is advised under its own name, and the table's columns stay aligned."""
    model = gpt_oss_120b(MXFP4, gb.F16)
    local_hub.add("unsloth/gpt-oss-120b-GGUF", HubRepo({
        **split_files("gpt-oss-120b-F16", *model, 1), **split_files("F16/gpt-oss-120b-F16", *model, 2)}))

    advice = advise_repo("unsloth/gpt-oss-120b-GGUF", machine(24, 96), 16384, endpoint=local_hub.url)
    lines = repo_lines("unsloth/gpt-oss-120b-GGUF", advice)

    assert {a.quant: a.plan.verdict for a in advice if a.plan} == {
        "F16 (top level)": "fits_with_expert_offload", "F16 (F16/)": "fits_with_expert_offload"}
    assert len({line.index("GB") for line in lines[2:]}) == 1  # the size column
