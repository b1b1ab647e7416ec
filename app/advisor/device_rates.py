"""Device rates for the speed model: each device's bandwidth, FLOP/s and host-to-GPU copy rate,
and the shares of them llama.cpp's kernels and copies reach.

The bandwidths come from the RAM probe (app/hardware/bandwidth.py) and NVML or a table
(app/advisor/gpu_specs.py); the efficiencies below are llama.cpp's, each a (low, high) pair
that turns into the (pessimistic, optimistic) ends of the range. The CPU reads weights at a
share of the probe's all-core read rate, and, where they are in the file's layout (the GPU's
host buffer, or repacking off), at most at a share of one core's read rate per thread, or at
the rate llama.cpp's own kernels were timed at on this machine with the same threads
(app/hardware/expert_read.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.advisor.gpu_specs import gpu_spec
from app.engine.placement import CPU_DEVICE
from app.hardware.bandwidth import RamBandwidth
from app.hardware.h2d import HostCopyRates
from app.hardware.model import Gpu

Range = tuple[float, float]  # (pessimistic, optimistic)
# Share of peak memory bandwidth llama.cpp's quantized matrix-vector kernels stream at batch 1.
GPU_BW_EFFICIENCY: Range = (0.55, 0.80)
# Share of the probe's read bandwidth llama.cpp's CPU dot-product kernels reach (the probe
# is a pure streaming sum, the best case; the kernels also unpack quant blocks).
CPU_BW_EFFICIENCY: Range = (0.55, 0.85)
# A thread of llama.cpp's CPU kernels on weights in the file's layout (the GPU's host buffer,
# or --no-repack) reads at this share of the probe's one-thread read rate (unpacking quant
# blocks; the thread pool's barrier waits for the slowest): 0.30-0.48 over 26 decode runs with
# experts in RAM on four hosts (two H200 and two H100 instances, issue 19), where their share
# of the all-core rate ranged 0.48-1.24. So 16 threads of a host whose cores stream slowly
# (the H100 host's 7.7 GB/s a core against the H200's 8.6) decode below its all-core figure.
# Repacked weights (CPU only, or no_host) run faster kernels: the all-core bound alone.
CPU_THREAD_EFFICIENCY: Range = (0.30, 0.45)
# The CPU kernels' measured read rate for weights in the file's layout (the kernel probe) around
# a decode: the host's spread from load to load (its CPU compute for the same graph varied by a
# quarter either way on the H100). Not for repacked weights, whose dense matrices stream faster
# (docs/benchmarks.md, "the kernel probe").
MEASURED_CPU_READ_EFFICIENCY: Range = (0.85, 1.15)
# What the CPU's reads and the copy engine's (the cache's copies from pinned memory) reach
# together, as a share of the RAM probe's all-core rate, where the CPU kernels' own rate was
# measured (without it, the CPU's share of the probe, CPU_BW_EFFICIENCY, stands for both: a
# CPU that reads at its RAM's rate leaves the copies nothing). With it a core-bound CPU leaves
# the difference: the H100 host's kernels read experts at ~61 GB/s (bench/cpu_moe_decode.py) of
# the probe's 80-112, and eager's copies beside them cost its CPU nothing measurable (its CPU
# compute 5.7-6.1 ms a token against thrifty's 7.1-7.5 with fewer misses; docs/benchmarks.md,
# "Twentieth session").
SHARED_RAM_EFFICIENCY: Range = (0.85, 1.0)
# a dense weight as the kernel probe's cost a matrix sees it: a size past which that cost is nil
DENSE_MATRIX_WEIGHTS = 1 << 40
# The CPU kernels' read rate for weights of each type in the file's layout, against Q4_0's (the
# kernel probe's type): the kernel probe run with the routed experts in each type on the dev
# machine's Xeon (AVX-512 VNNI, 2 threads: bound by its cores), medians of 5 passes, each
# against the same pass's Q4_0, two runs (docs/benchmarks.md, "Kernel rate by type"). A weight takes
# 0.9-1.3x as long in Q4_K, Q6_K and Q8_0 as in Q4_0 (int8 dot products), so the wider types
# stream more bytes a second; the i-quants' grid lookups take about twice as long. MXFP4:
# 0.62-0.89 there (2 threads, bound by its cores). On the GPU hosts' 16 threads, gpt-oss's decodes
# with experts in RAM (ten runs of gpt-oss-120b and -20b on two H200 and two H100 hosts) centre
# on 0.55 (-19% to +21%; 0.65 put nine of them 13-39% high). Unlisted types: Q4_0's rate. Where
# RAM bounds the CPU instead, the faster types gain nothing (DeviceRates.read_rate).
CPU_KERNEL_RATE = {"Q8_0": 1.45, "Q6_K": 1.45, "Q5_K": 1.15, "Q4_K": 1.15, "Q3_K": 1.05, "Q2_K": 1.15,
                   "IQ4_XS": 0.95, "IQ3_S": 0.55, "IQ3_XXS": 0.6, "IQ2_S": 0.65, "IQ2_XS": 0.5,
                   "IQ2_XXS": 0.45, "IQ1_M": 0.5, "IQ1_S": 0.45, "MXFP4": 0.55}
# Share of the GPU's fp16 tensor peak llama.cpp's quantized matmul (MMQ) reaches in prefill
# of dense layers (pp512 figures of llama-bench on datacenter and desktop GPUs).
GPU_FLOPS_EFFICIENCY: Range = (0.08, 0.20)
# CPU prefill: llama.cpp's int8 dot-product GEMM against numpy's float32 BLAS on the same cores.
CPU_FLOPS_EFFICIENCY: Range = (0.4, 1.0)
# CPU prefill of routed experts by type, against the k-quants' (which CPU_FLOPS_EFFICIENCY's
# middle already reads a bit fast): the dev machine's 2 cores, Qwen3-30B's experts in each type
# (docs/benchmarks.md, "CPU-only runs by type"), repacked for the CPU or in the file's layout
# (the i-quants and MXFP4 are not repacked: their file's layout either way). One machine, one
# shape: coarse; unlisted types 1.
CPU_PREFILL_SPEED_REPACKED = {"MXFP4": 0.65, "Q8_0": 0.65}
CPU_PREFILL_SPEED_FILE_LAYOUT = {"MXFP4": 0.3, "Q8_0": 0.5, "Q4_0": 0.4}
# Host-to-GPU copies, not measured: pinned memory reaches this share of the PCIe link; pageable
# memory (mmap) goes through the CUDA driver's staging memcpy, this share of the RAM probe's
# one-thread copy rate: 0.78-1.52, geometric mean 1.07, over the 18 experts-in-RAM runs on the
# H200 (0.73-0.79 on three of the H100 host's five: a numpy copy is not the driver's).
PINNED_EFFICIENCY: Range = (0.75, 0.90)
PAGEABLE_EFFICIENCY: Range = (0.85, 1.35)
# Host-to-GPU copies measured through the CUDA runtime (app/hardware/h2d.py: one 256 MiB
# cudaMemcpy from a mapped file, from pinned memory): llama.cpp's copies of the used experts,
# tensor by tensor with a synchronisation before each, at this share of them. Fitted on the
# sixteenth session's H100 host (bench/copy_rate_fit.py on tests/data/prefill_h100.csv: three
# prefills each way, the probe run on the same host before them): from the mapped file
# 0.92-1.02x the probe (geometric mean 0.97x; the numpy copy's 0.69-0.76x there), from pinned
# memory 1.01-1.02x. One host: the ranges keep room for others.
MAPPED_COPY_EFFICIENCY: Range = (0.85, 1.10)
PINNED_COPY_EFFICIENCY: Range = (0.90, 1.10)
# The dynamic cache's copies from pinned memory, beside a decoding CPU, reach this share of the
# pinned copy rate above: the CPU's reads take most of RAM's bandwidth, and each CPU split's
# results take turns with them on the copy engine. A step's copies are spread over the CPU's part
# of the step and must be done before the next step maps them, so what does not fit under the
# CPU's compute lengthens the token. Fitted on the H100 host's eager rows in
# tests/data/expert_cache_h100.csv (thirty-fourth session): the CPU splits' waits above thrifty's
# were 0.6-0.8 / 3.4-3.7 ms a token on the 235B shape at 12.5% / 25% and 1.7 on the 30B shape at
# 25% (0.55 gives 0 / 3.6-4.1 / 2.7); one host.
COPY_LINK_SHARE: Range = (0.5, 0.7)
# When RAM was not measured: a dual-channel DDR5 desktop (stated in the prediction's notes).
TYPICAL_RAM = RamBandwidth(read_bw=60e9, read_bw_1=20e9, copy_bw_1=10e9, matmul_flops=500e9,
                           threads=8, buffer_bytes=0, cpu="typical desktop")


@dataclass
class DeviceRates:
    bandwidth: float  # bytes/s
    flops: float  # FLOP/s peak
    h2d_pinned: float = 0.0  # GPUs: host-to-device bytes/s, the link's peak
    source: str = ""
    # the CPU, weights in the file's layout: threads x one thread's read rate (0: no such bound)
    thread_bw: float = 0.0
    # GPUs: host-to-device copies measured through the CUDA runtime (None: estimated)
    host_copy: HostCopyRates | None = None
    # the CPU: its kernels' read rate for weights in the file's layout, measured by decoding (0:
    # not measured for this plan's threads, or its weights are repacked), as Q4_0's, for the
    # model's routed experts (the probe's rate taken at their size)
    kernel_bw: float = 0.0
    # the CPU: its kernels on a dense matrix against that (one matrix a weight: no expert's own
    # cost; ExpertReadRate.rate_for past any size), 1 where not separated
    dense_kernel_speed: float = 1.0
    # the CPU: its kernels' speed on each weight type against Q4_0's (CPU_KERNEL_RATE, and the
    # types the kernel probe timed on this machine)
    kernel_speeds: dict[str, float] = field(default_factory=dict)
    timed_types: frozenset[str] = frozenset()  # of those, timed on this machine
    file_layout: bool = False  # the CPU: its weights stay in the file's layout (not repacked)

    def kernel_speed(self, type_bytes: dict[str, float]) -> float:
        """The CPU's kernels on weights of these types (bytes by type) against Q4_0's: the bytes
        over those Q4_0 would read in the same time."""
        as_q4_0 = sum(n / self.kernel_speeds.get(q, 1.0) for q, n in type_bytes.items())
        return sum(type_bytes.values()) / as_q4_0 if as_q4_0 > 0 else 1.0

    def dense_share_speed(self, dense_bytes: float, n_bytes: float) -> float:
        """The CPU's kernels on ``n_bytes`` of which ``dense_bytes`` are dense matrices against
        on routed experts alone (``dense_kernel_speed`` for the dense share)."""
        if n_bytes <= 0 or dense_bytes <= 0 or self.dense_kernel_speed == 1.0:
            return 1.0
        dense = min(dense_bytes, n_bytes)
        return n_bytes / (n_bytes - dense + dense / self.dense_kernel_speed)

    def kernel_note(self, type_bytes: dict[str, float]) -> str | None:
        """What the CPU's kernels on these types change, for the prediction's notes (None: little)."""
        odd = sorted(q for q, n in type_bytes.items()
                     if n and not 0.8 <= self.kernel_speeds.get(q, 1.0) <= 1.25)
        if not odd:
            return None
        speeds = ", ".join(f"{q} weights at {self.kernel_speeds[q]:.2g}x" for q in odd)
        untimed = [q for q in odd if q not in self.timed_types]
        where = ("timed on this machine" if not untimed else "another machine's figures: 'moedesk-cli "
                 f"probe-cpu {' '.join(f'--type {q}' for q in untimed)}' times them here")
        return f"the CPU's kernels stream {speeds} Q4_0's bytes a second, {where}"

    def shared_read_rate(self, end: int) -> float:
        """Bytes/s the CPU's reads and the copy engine's reach together from RAM."""
        return self.bandwidth * (SHARED_RAM_EFFICIENCY if self.kernel_bw else CPU_BW_EFFICIENCY)[end]

    def read_rate(self, end: int, gpu: bool, kernel_speed: float = 1.0) -> float:
        """Bytes/s the device's kernels read weights at, at the range's ``end``. ``kernel_speed``:
        the CPU's kernels on these weights' types against Q4_0's (``kernel_speed``); it
        scales what the cores bound, not what RAM does (a slower type slows both)."""
        if gpu:
            return self.bandwidth * GPU_BW_EFFICIENCY[end]
        if self.kernel_bw:
            return min(self.kernel_bw * kernel_speed * MEASURED_CPU_READ_EFFICIENCY[end],
                       self.bandwidth * SHARED_RAM_EFFICIENCY[end])
        rate = self.bandwidth * CPU_BW_EFFICIENCY[end] * min(kernel_speed, 1.0)
        if self.thread_bw:
            rate = min(rate, self.thread_bw * CPU_THREAD_EFFICIENCY[end] * kernel_speed)
        return rate

    def copy_rate(self, end: int, mapped_file: bool, ram: RamBandwidth) -> float:
        """Bytes/s weights in RAM are copied to this GPU at (op offload), at the range's ``end``:
        from a memory-mapped file (pageable) or from pinned memory. Measured where the probe
        ran on this GPU; else the link's peak and, from a mapped file, the RAM probe's copy."""
        if self.host_copy is not None:
            if mapped_file:
                return self.host_copy.from_file * MAPPED_COPY_EFFICIENCY[end]
            return self.host_copy.pinned * PINNED_COPY_EFFICIENCY[end]
        pinned = self.h2d_pinned * PINNED_EFFICIENCY[end]
        return min(ram.copy_bw_1 * PAGEABLE_EFFICIENCY[end], pinned) if mapped_file else pinned


def device_rates(gpus: dict[str, Gpu | None], ram: RamBandwidth | None, n_threads: int, physical_cores: int,
                 file_layout: bool = False,
                 expert_weights: int = 0) -> tuple[dict[str, DeviceRates], list[str]]:
    """Rates of the CPU (with ``n_threads`` threads) and of each GPU device, and notes.
    ``file_layout``: the CPU's weights stay in the file's layout (not repacked);
    ``expert_weights``: the model's routed experts' size, at which the kernel probe's rate is
    taken (0: the probe's own)."""
    notes = []
    if ram is None:
        ram = TYPICAL_RAM
        notes.append("RAM speed not measured: a typical desktop's assumed")
    threads = n_threads or physical_cores
    cpu_bw = min(ram.read_bw, threads * ram.read_bw_1)
    cpu_flops = ram.matmul_flops * min(1.0, threads / max(physical_cores, 1))
    kernels = ram.expert_read
    kernel_bw = 0.0  # as Q4_0's rate (the kernel speeds scale it to each weight's type)
    dense_speed = 1.0
    kernel_speeds, timed = dict(CPU_KERNEL_RATE), frozenset()
    if kernels:
        probed = CPU_KERNEL_RATE.get(kernels.quant, 1.0)
        kernel_speeds |= {q: speed * probed for q, speed in kernels.type_speeds.items()}
        timed = frozenset(kernels.type_speeds) | {kernels.quant}
        if kernels.threads == threads and file_layout:
            kernel_bw = kernels.rate_for(expert_weights) / probed
            dense_speed = kernels.rate_for(DENSE_MATRIX_WEIGHTS) / kernels.rate_for(expert_weights)
    source = f"{cpu_bw / 1e9:.0f} GB/s measured" + (
        f", its kernels {kernel_bw / 1e9:.0f} GB/s measured by decoding" if kernel_bw else "")
    rates = {CPU_DEVICE: DeviceRates(cpu_bw, cpu_flops, source=source,
                                     thread_bw=threads * ram.read_bw_1 if file_layout else 0.0,
                                     kernel_bw=kernel_bw, dense_kernel_speed=dense_speed,
                                     kernel_speeds=kernel_speeds,
                                     timed_types=timed, file_layout=file_layout)}
    for device, gpu in gpus.items():
        spec = gpu_spec(gpu, device)
        # the probe measured CUDA device 0; a GPU of another name is not the one it measured
        measured = ram.host_copy if ram.host_copy and gpu and gpu.name == ram.host_copy.gpu else None
        rates[device] = DeviceRates(spec.bandwidth, spec.flops, spec.pcie, spec.source, host_copy=measured)
        if spec.source.startswith("guessed"):
            notes.append(f"{device}: unknown GPU, its speed is guessed")
    return rates, notes
