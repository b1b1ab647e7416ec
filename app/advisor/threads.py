"""How many CPU threads, and on which NUMA node, for the part of a model that runs on the CPU.

Decode on the CPU streams routed experts from RAM: one thread per physical core saturates
memory, and hyperthreads only contend for the same load ports. On a machine with several
NUMA nodes, a thread reading another node's memory crosses the socket link at a fraction of
local bandwidth; when what lives in RAM fits one node, keeping the threads and the memory
on that node is fastest; when it does not, spreading pages and threads over all nodes is.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.hardware.model import Hardware, NumaNode


@dataclass
class ThreadAdvice:
    n_threads: int
    advice: list[str]  # plain words, with the command to run where there is one
    numa_node: int | None = None  # the node to bind to, when one node is advised


def physical_cores_of(node: NumaNode, hardware: Hardware) -> int:
    """Physical cores of a node: its logical CPUs over the machine's threads per core."""
    per_core = max(1, hardware.cpu.logical_cores // max(1, hardware.cpu.physical_cores))
    return max(1, len(node.cpus) // per_core)


def thread_advice(hardware: Hardware, ram_bytes: int, cpu_busy: bool) -> ThreadAdvice:
    """Threads for a plan that keeps ``ram_bytes`` in RAM; ``cpu_busy``: the CPU computes
    part of every token (layers or routed experts in RAM), so threads matter."""
    cores = hardware.cpu.physical_cores
    advice = []
    if hardware.cpu.logical_cores > cores:
        advice.append(f"{cores} threads, one per physical core (of {hardware.cpu.logical_cores} "
                      "hardware threads): decode is memory bound and hyperthreads only contend")
    else:
        advice.append(f"{cores} threads, one per core")
    nodes = [n for n in hardware.numa_nodes if n.cpus and n.mem_total]
    if len(nodes) < 2 or not cpu_busy:
        if not cpu_busy:
            advice.append("the GPU does nearly all the work; CPU threads hardly matter")
        return ThreadAdvice(cores, advice)
    best = max(nodes, key=lambda n: n.mem_free)
    if ram_bytes <= best.mem_free:
        n = physical_cores_of(best, hardware)
        return ThreadAdvice(n, [
            f"NUMA: the {ram_bytes / 1e9:.1f} GB in RAM fit node {best.id} "
            f"({best.mem_free / 1e9:.1f} GB free): run on that node's {n} cores with its "
            f"memory only: numactl --cpunodebind={best.id} --membind={best.id} moedesk",
            f"{n} threads (node {best.id}'s physical cores); remote memory would cost "
            "about half the bandwidth",
        ], numa_node=best.id)
    return ThreadAdvice(cores, [
        *advice,
        f"NUMA: the {ram_bytes / 1e9:.1f} GB in RAM exceed one node's free memory "
        f"({best.mem_free / 1e9:.1f} GB on node {best.id}): interleave pages over all "
        f"{len(nodes)} nodes and use every core: numactl --interleave=all moedesk",
    ])
