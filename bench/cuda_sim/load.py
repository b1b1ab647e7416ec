"""llama.cpp's compute buffers on the CUDA stand-in, without a GPU.

Loads a model the way the engine would for a placement (app/engine/llama_params.py), with
llama.cpp's ``no_alloc`` (only the metadata is read: a sparse file from
``app.synthetic.write_synthetic_header`` will do, at any size), on the stand-in device of
bench/cuda_sim/fake_cuda.cpp, in a child process that preloads the tracing graph allocator.
Returns each compute buffer's size in bytes and the allocator's trace. Build first:
``python bench/cuda_sim/build.py --llama-cpp SRC``.

    python bench/cuda_sim/load.py MODEL.gguf --plan '{"n_ctx": 4096, "experts_in_ram": "all"}'
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBS = Path(os.environ.get("MOEDESK_CUDA_SIM", "/tmp/moedesk-cuda-sim"))


@dataclasses.dataclass
class StandInLoad:
    buffers: dict[str, int]  # compute buffer bytes by buffer type: "CUDA0", "CUDA_Host"
    trace: str  # the graph allocator's trace (see build.py)


def plan_from_json(text: str):  # noqa: ANN201 (a PlacementPlan; imported in the child only)
    from app.engine.placement import PlacementPlan, TensorOverride
    fields = json.loads(text)
    fields["overrides"] = [TensorOverride(**rule) for rule in fields.get("overrides", [])]
    return dataclasses.replace(PlacementPlan(split_mode="none", use_mmap=False), **fields)


def stand_in_load(model: Path, plan_fields: dict[str, object]) -> StandInLoad:
    """Loads ``model`` with ``plan_fields`` (PlacementPlan fields) on the stand-in."""
    if not (LIBS / "libfakecuda.so").exists():
        raise SystemExit(f"no stand-in in {LIBS}: run bench/cuda_sim/build.py first")
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.txt"
        env = dict(os.environ, GALLOC_TRACE=str(trace), LD_PRELOAD=str(LIBS / "libgalloctrace.so"),
                   PYTHONPATH=str(ROOT))
        command = [sys.executable, __file__, str(model), "--plan", json.dumps(plan_fields), "--child"]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"stand-in load of {model.name} failed: {done.stderr[-2000:]}")
        text = trace.read_text()
    buffers = {}
    for line in text.splitlines():
        if line.startswith("END "):
            _, buft, size = line.split()
            buffers[buft] = int(size)
    return StandInLoad(buffers, text)


def child(model: Path, plan_text: str) -> None:
    """In the child: register the stand-in, load with no_alloc, create the context."""
    import llama_cpp

    ctypes.CDLL(str(LIBS / "libfakecuda.so"), mode=ctypes.RTLD_GLOBAL).fake_cuda_register()
    from app.engine.llama_params import context_params, model_params
    from app.gguf.info import read_model

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def on_log(_level, text, _user):  # noqa: ANN001
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))

    @llama_cpp.llama_progress_callback
    def progress(_fraction, _user):  # noqa: ANN001
        return True

    info = read_model(model)
    plan = plan_from_json(plan_text)
    params = model_params(plan, info.n_layer, info.architecture, progress)
    params.params.no_alloc = True
    handle = llama_cpp.llama_model_load_from_file(str(model).encode(), params.params)
    context = handle and llama_cpp.llama_init_from_model(handle, context_params(plan))
    if not context:
        sys.exit("".join(lines[-30:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--plan", default="{}", help="PlacementPlan fields as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.model, args.plan)
        return 0
    load = stand_in_load(args.model, json.loads(args.plan))
    for buft, size in load.buffers.items():
        print(f"{buft} compute buffer: {size / 2**20:.2f} MiB ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
