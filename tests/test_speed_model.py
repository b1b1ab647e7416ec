"""The speed model: what each token reads where, and how the ranges move with the placement.

Speed itself is measured in bench/predict_vs_measure.py (no timed assertions here); these
tests check the model's accounting and its response to the machine's figures.
"""

from __future__ import annotations

import dataclasses

import pytest

from app.advisor.speed import predict
from app.engine.placement import PlacementPlan
from app.gguf.info import kv_bytes_per_layer
from app.hardware.bandwidth import RamBandwidth
from app.hardware.expert_read import ExpertReadRate
from app.synthetic import SyntheticSpec
from tests.test_advisor import QWEN3_30B_Q4, model_from_spec
from tests.test_advisor_gpus import H100

GB = 1e9
SERVER_RAM = RamBandwidth(read_bw=80e9, read_bw_1=12e9, copy_bw_1=9e9, matmul_flops=1.5e12,
                          threads=16, buffer_bytes=512 << 20)
ON_GPU = {"CUDA0": H100}


def plan(experts_in_ram: str | int = "none", **fields: object) -> PlacementPlan:
    return dataclasses.replace(PlacementPlan(n_ctx=4096, n_threads=16, flash_attn="on",
                                             experts_in_ram=experts_in_ram), **fields)


def test_a_token_reads_the_top_k_experts_where_they_live() -> None:
    model = QWEN3_30B_Q4
    p = predict(model, plan("all"), ON_GPU, SERVER_RAM, 16, n_prompt=500, n_gen=100)
    routed = sum(t.n_bytes for t in model.tensors if t.tensor_class == "routed_experts")
    embedding_row = 2048 * 2  # one f16 row of token_embd
    assert p.decode_bytes["CPU"] == int(routed * 8 / 128 + embedding_row)
    dense = sum(t.n_bytes for t in model.tensors
                if t.tensor_class not in ("routed_experts", "embeddings"))
    kv = 48 * kv_bytes_per_layer(model, 550)  # the middle of generation: 500 + 100 / 2
    assert p.decode_bytes["CUDA0"] == dense + kv


def test_more_experts_in_ram_is_slower() -> None:
    ranges = [predict(QWEN3_30B_Q4, plan(n), ON_GPU, SERVER_RAM, 16).decode
              for n in ("none", 12, 24, 36, "all")]
    for faster, slower in zip(ranges, ranges[1:], strict=False):
        assert slower.high < faster.high and slower.low < faster.low
    assert all(r.low < r.high for r in ranges)


def test_ram_bandwidth_matters_only_for_what_is_in_ram() -> None:
    fast_ram = dataclasses.replace(SERVER_RAM, read_bw=160e9, read_bw_1=24e9)
    on_gpu = [predict(QWEN3_30B_Q4, plan("none"), ON_GPU, r, 16).decode for r in (SERVER_RAM, fast_ram)]
    in_ram = [predict(QWEN3_30B_Q4, plan("all"), ON_GPU, r, 16).decode for r in (SERVER_RAM, fast_ram)]
    # on the GPU only the embedding row (4 KB) is read from RAM
    assert on_gpu[0].mid == pytest.approx(on_gpu[1].mid, rel=1e-4)
    assert in_ram[1].mid > 1.5 * in_ram[0].mid


def test_few_threads_read_ram_at_their_own_pace() -> None:
    many = predict(QWEN3_30B_Q4, plan("all"), ON_GPU, SERVER_RAM, 16).decode
    two = predict(QWEN3_30B_Q4, plan("all", n_threads=2), ON_GPU, SERVER_RAM, 16).decode
    assert two.mid < 0.5 * many.mid  # 2 x 12 GB/s instead of 80 GB/s


def test_slow_cores_bound_decode_from_the_file_s_layout_but_not_from_repacked_weights() -> None:
    # two hosts with the same all-core read rate, one whose cores each stream half as fast (the
    # H100 host's 7.7 GB/s against the H200's 8.6 is the real case): with a GPU the experts in
    # RAM stay in the file's layout, whose kernels a thread runs at a share of its core's rate
    hosts = (SERVER_RAM, dataclasses.replace(SERVER_RAM, read_bw_1=6e9))
    fast, slow = (predict(QWEN3_30B_Q4, plan("all"), ON_GPU, r, 16).decode for r in hosts)
    assert slow.mid < 0.8 * fast.mid
    # no_host puts them in the CPU's repacked layouts: the all-core rate bounds them alone
    repacked = [predict(QWEN3_30B_Q4, plan("all", no_host=True), ON_GPU, r, 16).decode for r in hosts]
    assert repacked[1].mid == pytest.approx(repacked[0].mid, rel=1e-6)
    assert repacked[1].mid > 1.2 * slow.mid
    # so does a CPU-only run, which repacks; with repacking off, the cores' rate counts again
    cpu_only = [predict(QWEN3_30B_Q4, plan(n_gpu_layers=0), {}, r, 16).decode for r in hosts]
    assert cpu_only[1].mid == pytest.approx(cpu_only[0].mid, rel=1e-6)
    mapped = [predict(QWEN3_30B_Q4, plan(n_gpu_layers=0, repack=False), {}, r, 16).decode for r in hosts]
    assert mapped[1].mid < 0.8 * mapped[0].mid


def test_the_cpu_kernels_measured_rate_times_weights_in_the_file_s_layout() -> None:
    # the kernel probe's figure (app/hardware/expert_read.py) replaces the RAM probe's estimate
    # for the CPU's weights in the file's layout, with the threads it was measured with
    measured = ExpertReadRate(bytes_per_s=20e9, threads=16, quant="Q4_0")
    timed = dataclasses.replace(SERVER_RAM, expert_read=measured)
    estimated = predict(QWEN3_30B_Q4, plan("all"), ON_GPU, SERVER_RAM, 16).decode
    slow = predict(QWEN3_30B_Q4, plan("all"), ON_GPU, timed, 16).decode
    assert slow.mid < 0.7 * estimated.mid  # 17-23 GB/s against 44-68 GB/s estimated
    fast = dataclasses.replace(measured, bytes_per_s=200e9)
    assert predict(QWEN3_30B_Q4, plan("all"), ON_GPU, dataclasses.replace(SERVER_RAM, expert_read=fast),
                   16).decode.mid > estimated.mid
    # a token's time grows by the CPU's bytes (its experts, an embedding row) over the rate
    in_ram = predict(QWEN3_30B_Q4, plan("all"), ON_GPU, timed, 16)
    cpu_bytes = in_ram.decode_bytes["CPU"]
    half_rate = dataclasses.replace(SERVER_RAM, expert_read=dataclasses.replace(measured, bytes_per_s=10e9))
    doubled = predict(QWEN3_30B_Q4, plan("all"), ON_GPU, half_rate, 16)
    for end in ("low", "high"):
        added = 1 / getattr(doubled.decode, end) - 1 / getattr(in_ram.decode, end)
        efficiency = 0.85 if end == "low" else 1.15
        assert added == pytest.approx(cpu_bytes / (efficiency * 10e9) * (1 - 10e9 / 20e9), rel=1e-3)
    # on the GPU nothing is read from RAM but an embedding row (4 KB): the probe changes ~nothing
    assert predict(QWEN3_30B_Q4, plan("none"), ON_GPU, timed, 16).decode.mid == pytest.approx(
        predict(QWEN3_30B_Q4, plan("none"), ON_GPU, SERVER_RAM, 16).decode.mid, rel=1e-4)
    # measured with other threads, or for weights repacked for the CPU, it is not used
    for other, gpus in ((plan("all", n_threads=8), ON_GPU), (plan("all", no_host=True), ON_GPU),
                        (plan(n_gpu_layers=0), {})):
        assert predict(QWEN3_30B_Q4, other, gpus, timed, 16).decode.mid == pytest.approx(
            predict(QWEN3_30B_Q4, other, gpus, SERVER_RAM, 16).decode.mid, rel=1e-9)
    # a CPU-only run with repacking off reads the experts in the file's layout: used
    cpu_file = plan(n_gpu_layers=0, repack=False)
    assert predict(QWEN3_30B_Q4, cpu_file, {}, timed, 16).decode.mid < 0.9 * predict(
        QWEN3_30B_Q4, cpu_file, {}, SERVER_RAM, 16).decode.mid


def test_the_cpu_kernels_rate_follows_the_type_of_each_weight() -> None:
    # the kernel probe times Q4_0; other types' kernels stream at their own rates
    # (CPU_KERNEL_RATE): where the cores bound the CPU a weight takes about as long in Q6_K as
    # in Q4_0, and about twice as long in IQ2_XXS (its grid lookups)
    models = {q: model_from_spec(SyntheticSpec.preset("qwen3-30b-a3b", expert_quant=q))
              for q in ("Q4_0", "Q6_K", "IQ2_XXS")}
    cores_bound = dataclasses.replace(SERVER_RAM, expert_read=ExpertReadRate(20e9, 16, "Q4_0"))
    decode = {q: predict(m, plan("all"), ON_GPU, cores_bound, 16) for q, m in models.items()}
    experts = {q: decode[q].decode_bytes["CPU"] for q in models}
    assert experts["Q6_K"] > 1.4 * experts["Q4_0"] and experts["IQ2_XXS"] < 0.5 * experts["Q4_0"]
    assert decode["Q6_K"].decode.mid == pytest.approx(decode["Q4_0"].decode.mid, rel=0.05)
    assert decode["IQ2_XXS"].decode.mid < 1.05 * decode["Q4_0"].decode.mid
    # the RAM probe alone (no kernel rate): the i-quant's kernels still bound it
    estimated = {q: predict(m, plan("all"), ON_GPU, SERVER_RAM, 16).decode.mid for q, m in models.items()}
    assert estimated["IQ2_XXS"] < 1.3 * estimated["Q4_0"]
    # where RAM bounds the CPU (its kernels timed at 200 GB/s, its RAM read at 80) the faster
    # kernels gain nothing: each type's bytes count
    ram_bound = dataclasses.replace(SERVER_RAM, expert_read=ExpertReadRate(200e9, 16, "Q4_0"))
    fast = {q: predict(models[q], plan("all"), ON_GPU, ram_bound, 16).decode.mid for q in ("Q4_0", "Q6_K")}
    assert fast["Q6_K"] < 0.8 * fast["Q4_0"]
    # a rate measured on another type counts as that type's: the same machine measured on Q6_K
    as_q6 = dataclasses.replace(SERVER_RAM, expert_read=ExpertReadRate(20e9 * 1.45, 16, "Q6_K"))
    assert predict(models["Q4_0"], plan("all"), ON_GPU, as_q6, 16).decode.mid == pytest.approx(
        decode["Q4_0"].decode.mid, rel=1e-6)
    # a type timed on this machine replaces the table's figure: IQ2_XXS as fast a byte as Q4_0
    timed = dataclasses.replace(cores_bound, expert_read=dataclasses.replace(
        cores_bound.expert_read, type_speeds={"IQ2_XXS": 1.0}))
    faster = predict(models["IQ2_XXS"], plan("all"), ON_GPU, timed, 16)
    assert faster.decode.mid > 1.5 * decode["IQ2_XXS"].decode.mid
    # the prediction says where a type's kernels differ, and whether they were timed here
    assert ("IQ2_XXS weights at 0.45x Q4_0's bytes a second, another machine's figures: 'moedesk-cli "
            "probe-cpu --type IQ2_XXS' times them here") in " ".join(decode["IQ2_XXS"].notes)
    assert not any("kernels" in n for n in decode["Q4_0"].notes + faster.notes)  # 1.0x: nothing to say
    slow_here = dataclasses.replace(timed, expert_read=dataclasses.replace(
        timed.expert_read, type_speeds={"IQ2_XXS": 0.3}))
    assert "IQ2_XXS weights at 0.3x Q4_0's bytes a second, timed on this machine" in " ".join(
        predict(models["IQ2_XXS"], plan("all"), ON_GPU, slow_here, 16).notes)


def test_larger_experts_stream_faster_by_the_cost_each_expert_has_beside_its_bytes() -> None:
    # the thirty-fourth session's H100 host: its kernel probe read 67.8 GB/s on the 30B shape's
    # experts (2.53 MiB), and its n-cpu-moe decodes of the 235B shape's (10.1 MiB) implied 80-92:
    # with a cost per expert the probe's rate holds at its own size and rises for larger ones
    q30_experts = 3 * 2048 * 768
    flat = ExpertReadRate(bytes_per_s=71e9, threads=16, quant="Q4_0", expert_weights=q30_experts)
    per_expert = dataclasses.replace(flat, expert_seconds=8.4e-6)
    assert per_expert.rate_for(q30_experts) == pytest.approx(71e9)
    assert per_expert.rate_for(0) == flat.rate_for(4 * q30_experts) == 71e9
    assert per_expert.rate_for(4 * q30_experts) == pytest.approx(85.4e9, rel=0.01)
    # past the cost, the bytes alone: 2.65 MB over (37.3 - 8.4) us
    assert per_expert.rate_for(1000 * q30_experts) == pytest.approx(91.7e9, rel=0.01)
    # damaged: a per-expert cost of the whole time reads as none
    assert dataclasses.replace(flat, expert_seconds=1.0).rate_for(4 * q30_experts) == 71e9
    q235 = model_from_spec(SyntheticSpec.preset("qwen3-235b-a22b", n_layer=20))
    assert q235.expert_weights() == 3 * 4096 * 1536 and QWEN3_30B_Q4.expert_weights() == q30_experts
    wide_ram = dataclasses.replace(SERVER_RAM, read_bw=150e9)  # the kernels bound, not RAM
    predicted = {name: predict(m, plan("all"), ON_GPU, dataclasses.replace(wide_ram, expert_read=rate), 16)
                 for m, name0 in ((QWEN3_30B_Q4, "q30"), (q235, "q235"))
                 for rate, name in ((flat, f"{name0} flat"), (per_expert, f"{name0} per expert"))}
    assert predicted["q30 per expert"].decode.mid == pytest.approx(predicted["q30 flat"].decode.mid, rel=1e-6)
    assert predicted["q235 per expert"].decode.mid > 1.1 * predicted["q235 flat"].decode.mid
    # dense weights on the CPU (here everything, repacking off) stream past the cost an expert
    # has: the 30B shape's token is faster for its attention and output head alone
    cpu_only = plan(n_gpu_layers=0, repack=False)
    flat_cpu, per_expert_cpu = (
        predict(QWEN3_30B_Q4, cpu_only, {}, dataclasses.replace(wide_ram, expert_read=r), 16)
        for r in (flat, per_expert))
    assert per_expert_cpu.decode.mid > 1.05 * flat_cpu.decode.mid
    assert per_expert_cpu.decode_bytes == flat_cpu.decode_bytes


def test_cpu_prefill_of_mxfp4_and_q8_0_experts_is_slower_than_the_k_quants() -> None:
    # CPU only: MXFP4 and Q8_0 experts prefill at 0.6-0.75x the k-quants' rate repacked, less in
    # the file's layout (docs/benchmarks.md, "CPU-only runs by type"); the flops are the same
    models = {q: model_from_spec(SyntheticSpec.preset("qwen3-30b-a3b", expert_quant=q))
              for q in ("Q4_K", "MXFP4", "Q8_0")}
    for repack in (True, False):
        cpu = plan(n_gpu_layers=0, repack=repack)
        prefill = {q: predict(m, cpu, {}, SERVER_RAM, 16).prefill.mid for q, m in models.items()}
        assert prefill["MXFP4"] < 0.8 * prefill["Q4_K"] and prefill["Q8_0"] < 0.8 * prefill["Q4_K"]
    mxfp4 = [predict(models["MXFP4"], plan(n_gpu_layers=0, repack=r), {}, SERVER_RAM, 16).prefill.mid
             for r in (True, False)]
    assert mxfp4[1] < 0.7 * mxfp4[0]


def test_prefill_with_experts_in_ram_copies_them_over_pcie_per_ubatch() -> None:
    predicted = predict(QWEN3_30B_Q4, plan("all"), ON_GPU, SERVER_RAM, 16, n_prompt=512)
    assert any(n.startswith("prefill is bound by copying the routed experts") for n in predicted.notes)
    mmap = predicted.prefill
    pinned = predict(QWEN3_30B_Q4, plan("all", use_mmap=False), ON_GPU, SERVER_RAM, 16,
                     n_prompt=512).prefill
    # pageable memory goes through a 9 GB/s staging copy, pinned memory at PCIe 5 x16 speed
    assert pinned.low > 3 * mmap.low
    # a larger ubatch copies the experts once for more tokens
    big = predict(QWEN3_30B_Q4, plan("all", n_ubatch=2048), ON_GPU, SERVER_RAM, 16,
                  n_prompt=2048).prefill
    assert big.mid > 3 * mmap.mid
    gpu = predict(QWEN3_30B_Q4, plan("none"), ON_GPU, SERVER_RAM, 16, n_prompt=512)
    assert gpu.prefill.low > 10 * mmap.high
    assert gpu.notes == []


def test_a_cpu_only_run_uses_the_cpu_figures() -> None:
    p = predict(QWEN3_30B_Q4, plan(n_gpu_layers=0), {}, SERVER_RAM, 16)
    assert set(p.decode_bytes) == {"CPU"}
    double = predict(QWEN3_30B_Q4, plan(n_gpu_layers=0), {},
                     dataclasses.replace(SERVER_RAM, matmul_flops=3e12), 16)
    assert double.prefill.mid > 1.5 * p.prefill.mid  # prefill on a CPU is compute bound
    assert p.notes == []
    assert predict(QWEN3_30B_Q4, plan(n_gpu_layers=0), {}, None, 16).notes == [
        "RAM speed not measured: a typical desktop's assumed"]


@pytest.mark.parametrize("experts_in_ram, decode, prefill", [("none", 261.3, 6166)])
def test_the_h100_measurements_fall_in_the_predicted_range(experts_in_ram: str, decode: float,
                                                           prefill: float) -> None:
    # docs/benchmarks.md: synthetic Qwen3-30B-A3B Q4_0, all on the H100, 488-token prompt,
    # 128 tokens. GPU-only runs do not depend on the host's RAM figures.
    p = predict(QWEN3_30B_Q4, plan(experts_in_ram), ON_GPU, SERVER_RAM, 16, n_prompt=488, n_gen=128)
    assert p.decode.low <= decode <= p.decode.high
    assert p.prefill.low <= prefill <= p.prefill.high
