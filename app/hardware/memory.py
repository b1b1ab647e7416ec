"""How much memory there is: RAM and swap, each NUMA node's share, free disk for models."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psutil

from app.hardware.files import parse_cpulist, read_text
from app.hardware.model import Memory, NumaNode

NODE_DIR = re.compile(r"node(\d+)")
MEMINFO_KB = re.compile(r"^(?:Node \d+ )?(\w+):\s+(\d+) kB$", re.MULTILINE)


def detect_memory(root: Path, live: bool, notes: list[str]) -> Memory | None:
    """RAM and swap: psutil on this machine, root/proc/meminfo for a recorded tree. On this
    machine a cgroup memory limit below the RAM (a container, a systemd scope) is the RAM: the
    page cache counts against it, so a model streams from the SSD as on a smaller machine."""
    if live:
        vm = psutil.virtual_memory()
        total, available = vm.total, vm.available
        limit = cgroup_memory_limit()
        if limit is not None and limit[0] < total:
            notes.append(f"memory limited to {limit[0] / 2**30:.1f} GiB by this process's cgroup")
            total, available = limit[0], min(available, max(0, limit[0] - limit[1]))
        return Memory(total=total, available=available, swap_total=psutil.swap_memory().total)
    fields = _meminfo(root / "proc/meminfo")
    if "MemTotal" not in fields:
        notes.append("memory size unavailable (no readable /proc/meminfo)")
        return None
    return Memory(
        total=fields["MemTotal"],
        available=fields.get("MemAvailable", fields.get("MemFree", 0)),
        swap_total=fields.get("SwapTotal", 0),
    )


def detect_numa(root: Path, notes: list[str]) -> list[NumaNode]:
    """NUMA nodes from root/sys/devices/system/node; an empty list (and a note) when unknown."""
    if not (root / "sys").is_dir():
        notes.append("NUMA information unavailable (no /sys)")
        return []
    node_root = root / "sys/devices/system/node"
    try:
        dirs = [(int(m.group(1)), p) for p in node_root.iterdir() if (m := NODE_DIR.fullmatch(p.name))]
    except OSError:
        notes.append("NUMA information unavailable (no /sys/devices/system/node)")
        return []
    nodes = []
    for node_id, path in sorted(dirs):
        cpulist = read_text(path / "cpulist")
        fields = _meminfo(path / "meminfo")
        if cpulist is None or "MemTotal" not in fields:
            notes.append(f"NUMA node {node_id}: CPU list or memory size unreadable")
        nodes.append(
            NumaNode(
                id=node_id,
                cpus=parse_cpulist(cpulist or ""),
                mem_total=fields.get("MemTotal", 0),
                mem_free=fields.get("MemFree", 0),
            )
        )
    return nodes


def detect_disk_free(models_dir: Path, notes: list[str]) -> int | None:
    """Free bytes on the file system that holds models_dir (or would, once it is created)."""
    folder = models_dir.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError as exc:
        notes.append(f"free disk space unavailable for {models_dir}: {exc.strerror or exc}")
        return None


def _meminfo(path: Path) -> dict[str, int]:
    """A meminfo file (/proc/meminfo or a node's) as bytes per field."""
    return {key: int(kb) * 1024 for key, kb in MEMINFO_KB.findall(read_text(path) or "")}


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_memory_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                        root: Path = CGROUP_ROOT) -> tuple[int, int] | None:
    """This process's cgroup memory limit and usage in bytes (v2 memory.max/memory.current,
    v1 memory.limit_in_bytes/memory.usage_in_bytes), or None without a limit or cgroups."""
    text = read_text(proc_cgroup) or ""
    for line in text.splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = path.lstrip("/")
        if controllers == "":  # v2: "0::/path"
            folder, names = root / rel, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            folder, names = root / "memory" / rel, ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        limit, usage = read_text(folder / names[0]), read_text(folder / names[1])
        if limit is None or limit.strip() in ("", "max"):
            continue
        value = int(limit.strip())
        if value >= 2**60:  # v1's "no limit" (page-rounded LONG_MAX)
            continue
        return value, int((usage or "0").strip() or 0)
    return None
