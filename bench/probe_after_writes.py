"""Does writing a big file just before the kernel probe slow what it measures? (issue 19)

The thirty-second session's H200 host read llama.cpp's CPU kernels at 30 GB/s in a probe started
right after a 17 GB model was written, and at 40 and then 56 GB/s in the Q4_0 runs after it. The
probe now waits for pending writes (app/hardware/pending_writes.py); this times it both ways:
after writing ``--write-gb`` of random bytes, the probe with the wait left out (at once), then
with it; then, the disk quiet, once more each way. Four rates, in that order, a pass.

    python bench/probe_after_writes.py --threads 16 --write-gb 16 --passes 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

from app.engine.client import EngineClient
from app.hardware.pending_writes import pending_write_bytes
from app.tune import expert_read_probe
from app.tune.expert_read_probe import engine_has_gpu, measure_expert_read


def write_random(path: Path, size: int) -> None:
    block = os.urandom(64 << 20)
    with path.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)


def probe(client: EngineClient, threads: int, has_gpu: bool, folder: Path, settle: bool) -> str:
    pending = (pending_write_bytes() or 0) / 1e9
    start = time.monotonic()
    if settle:
        rate = measure_expert_read(client, threads=threads, has_gpu=has_gpu, folder=folder)
    else:
        with mock.patch.object(expert_read_probe, "settle_pending_writes", lambda *_a, **_k: True):
            rate = measure_expert_read(client, threads=threads, has_gpu=has_gpu, folder=folder)
    return (f"{'waited' if settle else 'at once'}: {rate.bytes_per_s / 1e9:.1f} GB/s "
            f"({pending:.1f} GB pending at the start, {time.monotonic() - start:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="0: the engine's default")
    parser.add_argument("--write-gb", type=float, default=16.0)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: the system's temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="moedesk-writes-", dir=args.dir) as tmp, \
            EngineClient.spawn() as client:
        folder, has_gpu = Path(tmp), engine_has_gpu(client)
        for n in range(args.passes):
            big = folder / "written.bin"
            write_random(big, int(args.write_gb * 1e9))
            results = [probe(client, args.threads, has_gpu, folder, settle=False),
                       probe(client, args.threads, has_gpu, folder, settle=True)]
            big.unlink()
            os.sync()
            results += [probe(client, args.threads, has_gpu, folder, settle=False),
                        probe(client, args.threads, has_gpu, folder, settle=True)]
            print(f"pass {n + 1} after writing {args.write_gb:g} GB: " + "; ".join(results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
