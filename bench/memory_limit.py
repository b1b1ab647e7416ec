"""Run a command with its memory (page cache included) limited by a cgroup, as root.

A model larger than RAM, made smaller than the disk: cgroup memory limits count the page cache
(v2 memory.max, v1 memory.limit_in_bytes), so a 24 GB model under an 6 GB limit streams from
the SSD as it would on a 6 GB machine. Both cgroup versions are handled: v2 where
/sys/fs/cgroup is unified, else v1's memory hierarchy.

    python bench/memory_limit.py 6GiB -- python -m app.cli chat ...
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/memory")


def parse_size(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


@contextmanager
def memory_limit(limit_bytes: int) -> Iterator[Path]:
    """A fresh cgroup limited to ``limit_bytes`` (no swap); yields its folder. Move processes in
    by writing their pid to cgroup.procs; the cgroup is removed when they have left."""
    name = f"moedesk-bench-{uuid.uuid4().hex[:8]}"
    if (V2_ROOT / "cgroup.controllers").exists():
        folder = V2_ROOT / name
        folder.mkdir()
        (folder / "memory.max").write_text(str(limit_bytes))
        if (folder / "memory.swap.max").exists():
            (folder / "memory.swap.max").write_text("0")
    elif V1_ROOT.is_dir():
        folder = V1_ROOT / name
        folder.mkdir()
        (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
    else:
        raise RuntimeError("no cgroup memory controller here (needs root and cgroup v1 or v2)")
    try:
        yield folder
    finally:
        try:
            folder.rmdir()
        except OSError:
            pass  # processes still in it: left for the OS


def oom_killed(folder: Path) -> int:
    """OOM kills in the cgroup so far."""
    for name in ("memory.events", "memory.oom_control"):
        path = folder / name
        if path.exists():
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def run_limited(limit_bytes: int, argv: list[str]) -> tuple[int, int]:
    """Run ``argv`` inside a fresh limited cgroup: its exit status and OOM kills."""
    with memory_limit(limit_bytes) as folder:
        procs = folder / "cgroup.procs"
        child = subprocess.Popen(argv, preexec_fn=lambda: procs.write_text(str(os.getpid())))
        status = child.wait()
        return status, oom_killed(folder)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    status, kills = run_limited(parse_size(argv[1]), argv[split + 1:])
    if kills:
        print(f"memory_limit: {kills} OOM kill(s) in the cgroup", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
