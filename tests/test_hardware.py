"""Hardware detection: on this machine for real, and on recorded /proc and /sys trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.hardware import Cpu, Gpu, Memory, NumaNode, detect

RECORDED = Path(__file__).parent / "data" / "hardware"
KiB = 1024


def test_this_machine_is_detected_without_errors(tmp_path: Path) -> None:
    hw = detect(models_dir=tmp_path / "models" / "not-created-yet")

    assert hw.cpu.logical_cores >= hw.cpu.physical_cores >= 1
    assert hw.memory is not None
    assert 0 < hw.memory.available <= hw.memory.total
    assert hw.memory.swap_total >= 0
    assert hw.disk_free is not None and hw.disk_free > 0
    for node in hw.numa_nodes:
        assert node.mem_free <= node.mem_total
    numa_cpus = [cpu for node in hw.numa_nodes for cpu in node.cpus]
    assert len(numa_cpus) == len(set(numa_cpus))
    for gpu in hw.gpus:
        assert gpu.vram_total is None or gpu.vram_free is None or gpu.vram_free <= gpu.vram_total
    nvidia = [g for g in hw.gpus if g.vendor == "nvidia"]
    if hw.nvml_error:  # no NVIDIA driver here: a note for the user, never an exception
        assert not nvidia
        assert any("no NVIDIA GPUs" in note for note in hw.notes)
    assert hw.summary()[0].startswith("CPU: ")


def test_two_socket_server_with_amx() -> None:
    hw = detect(RECORDED / "numa_server", nvml=False)

    assert hw.cpu == Cpu(
        model="Intel(R) Xeon(R) Platinum 8480+",
        arch="x86_64",
        physical_cores=4,
        logical_cores=8,
        flags=("avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512vbmi",
               "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"),
    )  # fmt: skip
    assert hw.memory == Memory(total=1056519168 * KiB, available=1012498432 * KiB, swap_total=8388604 * KiB)
    assert hw.numa_nodes == [
        NumaNode(id=0, cpus=(0, 1, 4, 5), mem_total=528259584 * KiB, mem_free=500619264 * KiB),
        NumaNode(id=1, cpus=(2, 3, 6, 7), mem_total=528259584 * KiB, mem_free=500619264 * KiB),
    ]
    assert hw.gpus == []
    assert hw.notes == []
    assert "NUMA: 2 nodes (node0: 4 CPUs, 503.8 GiB; node1: 4 CPUs, 503.8 GiB)" in hw.summary()


def test_desktop_with_amd_and_intel_gpus() -> None:
    hw = detect(RECORDED / "amd_gpu", nvml=False)

    assert (hw.cpu.model, hw.cpu.physical_cores, hw.cpu.logical_cores) == (
        "AMD Ryzen 9 7950X 16-Core Processor",
        2,
        4,
    )
    assert "avx512_bf16" in hw.cpu.flags and "amx_tile" not in hw.cpu.flags
    assert hw.numa_nodes == [
        NumaNode(id=0, cpus=(0, 1, 2, 3), mem_total=65536000 * KiB, mem_free=40000000 * KiB)
    ]
    assert hw.gpus == [
        Gpu(
            vendor="amd",
            name="AMD GPU 0x744c",
            vram_total=25753026560,
            vram_free=25753026560 - 1073741824,
            driver="amdgpu",  # from the 'driver' symlink
            pci_device_id="0x744c",
            pcie_gen=4,
            pcie_width=16,
            pcie_gen_max=4,
            pcie_width_max=16,
        ),
        Gpu(vendor="intel", name="INTEL GPU 0xa780", vram_total=None, vram_free=None, driver="i915",
            pci_device_id="0xa780"),  # driver from uevent: this card has no 'driver' symlink
    ]  # fmt: skip
    assert hw.notes == []
    assert "GPU 0: AMD GPU 0x744c, 24.0 GiB VRAM (23.0 GiB free), PCIe 4 x16 (max 4 x16), driver amdgpu" in (
        hw.summary()
    )


def test_arm64_server_with_sve() -> None:
    hw = detect(RECORDED / "arm64", nvml=False)

    assert hw.cpu == Cpu(
        model="ARM Neoverse-V2",
        arch="arm64",
        physical_cores=4,
        logical_cores=4,
        flags=("neon", "dotprod", "i8mm", "bf16", "sve", "sve2"),
    )
    assert hw.memory == Memory(total=491520000 * KiB, available=482000000 * KiB, swap_total=0)
    assert hw.numa_nodes == [
        NumaNode(id=0, cpus=(0, 1, 2, 3), mem_total=491520000 * KiB, mem_free=480000000 * KiB)
    ]
    assert hw.gpus == []
    assert hw.notes == []


def test_container_without_sys_says_what_it_could_not_read() -> None:
    hw = detect(RECORDED / "container", nvml=False)

    assert hw.cpu == Cpu(
        model="Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
        arch="x86_64",
        physical_cores=4,
        logical_cores=4,
        flags=("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
    )
    assert hw.memory == Memory(total=16384000 * KiB, available=12000000 * KiB, swap_total=2097148 * KiB)
    assert hw.numa_nodes == []
    assert hw.gpus == []
    assert hw.notes == [
        "NUMA information unavailable (no /sys)",
        "AMD and Intel GPU information unavailable (no /sys)",
    ]
    assert "Note: NUMA information unavailable (no /sys)" in hw.summary()


def test_empty_tree_degrades_to_notes(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()  # /sys mounted, but nothing in it we can use

    hw = detect(tmp_path, models_dir=tmp_path / "models", nvml=False)

    assert hw.cpu.logical_cores >= 1  # psutil's count of the host, as a last resort
    assert hw.memory is None
    assert hw.disk_free is not None
    assert hw.notes == [
        "CPU details unavailable (no readable /proc/cpuinfo); cores come from psutil",
        "memory size unavailable (no readable /proc/meminfo)",
        "NUMA information unavailable (no /sys/devices/system/node)",
    ]


def test_cli_prints_the_hardware_summary(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "app.cli", "hardware", "--models-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected = detect(models_dir=tmp_path).summary()
    assert lines[:2] == expected[:2]  # CPU and instruction sets (RAM figures move)
    assert len(lines) == len(expected) + 1  # and whether llama.cpp's CPU kernels were timed
    assert "CPU kernels" in lines[-1]
    assert any(line.startswith("RAM: ") for line in lines)


def test_the_ram_probe_measures_once_and_then_reads_its_cache(tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from app.hardware.bandwidth import CACHE_FILE, ram_bandwidth

    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    first = ram_bandwidth(buffer_bytes=64 * 2**20)
    assert first.read_bw > 1e8 and first.read_bw_1 > 1e8 and first.copy_bw_1 > 1e8
    assert first.matmul_flops > 1e8 and first.threads >= 1
    cache = tmp_path / "cache" / CACHE_FILE
    data = json.loads(cache.read_text())
    assert data["ram"]["read_bw"] == first.read_bw
    data["ram"]["read_bw"] = 123.0  # a figure no probe measures: proof it is read back
    cache.write_text(json.dumps(data))
    assert ram_bandwidth().read_bw == 123.0
    assert ram_bandwidth(refresh=True, buffer_bytes=64 * 2**20).read_bw > 1e8
    cache.write_text("{damaged")
    assert ram_bandwidth(buffer_bytes=64 * 2**20).read_bw > 1e8  # a damaged cache is measured again


def test_a_measured_gpu_bandwidth_wins_over_the_estimates(tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from app.advisor.gpu_specs import gpu_spec
    from app.hardware.bandwidth import record_gpu_bandwidth

    monkeypatch.setenv("MOEDESK_HOME", str(tmp_path))
    h100 = Gpu("nvidia", "NVIDIA H100 80GB HBM3", 80 * 2**30, 79 * 2**30, pcie_gen_max=5,
               pcie_width_max=16, memory_bandwidth=3.35e12)
    assert gpu_spec(h100).bandwidth == 3.35e12 and gpu_spec(h100).source.startswith("NVML")
    assert gpu_spec(h100).pcie == 16 * 3.938e9
    assert gpu_spec(Gpu("nvidia", "NVIDIA GeForce RTX 4090", None, None)).bandwidth == 1008e9
    assert gpu_spec(Gpu("amd", "AMD GPU 0x744c", None, None, pci_device_id="0x744c")).bandwidth == 960e9
    assert gpu_spec(Gpu("intel", "Mystery GPU", None, None)).source == "guessed (unknown GPU)"
    record_gpu_bandwidth("NVIDIA H100 80GB HBM3", 2.9e12)
    assert (gpu_spec(h100).bandwidth, gpu_spec(h100).source) == (2.9e12, "measured")


def test_nvml_bandwidth_is_memory_clock_times_bus_width() -> None:
    from app.hardware.gpus import _nvml_bandwidth

    class Nvml:  # NVML needs an NVIDIA driver; these are an RTX 4090's answers
        NVML_CLOCK_MEM = 2

        @staticmethod
        def nvmlDeviceGetMaxClockInfo(handle: object, clock: int) -> int:  # noqa: N802
            return 10501 if clock == 2 else 0

        @staticmethod
        def nvmlDeviceGetMemoryBusWidth(handle: object) -> int:  # noqa: N802
            return 384

    assert _nvml_bandwidth(Nvml, lambda query: query(None)) == pytest.approx(1008.1e9, rel=1e-4)
