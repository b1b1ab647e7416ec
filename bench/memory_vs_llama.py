"""The memory model against what llama.cpp allocates, device by device and kind by kind.

For each synthetic shape and placement the engine loads the model and reports its buffers
(``LoadResult.allocations``: weights, KV cache, compute); the advisor's ``memory_by_device``
predicts the same from the GGUF header. Prints one table row per device and kind. On the
accelerator machine (issue 19's families, real widths, few layers and experts):

    PYTHONPATH="$PWD:/tmp/moedesk-site" python3 bench/memory_vs_llama.py \\
        --shape deepseek-v3:2:16 --shape glm-4.5:2:8 --placement gpu --placement experts-ram

``--shape PRESET:LAYERS:EXPERTS`` (the dense leading layers become one, so that two layers
hold a dense and a MoE layer); placements as bench/predict_vs_measure.py names them, and
``layers-N`` (classic offload: N layers on the GPU, the output layer among them). ``--vocab 0``
keeps the preset's vocabulary (the logits of a ubatch then weigh in the compute buffer).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from app.advisor.memory import memory_by_device
from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import LoadParams
from app.gguf.info import read_model
from app.hardware.cpu import detect_cpu
from app.synthetic import SyntheticSpec, write_synthetic_model

KINDS = {"weights": "weights", "kv_cache": "kv", "compute": "compute"}


def shape_spec(text: str, n_vocab: int = 8192) -> SyntheticSpec:
    preset, layers, experts = text.split(":")
    base = SyntheticSpec.preset(preset)
    groups = {}
    if base.n_expert_groups > 1:  # keep groups of 2+ experts
        groups = {"n_expert_groups": min(base.n_expert_groups, int(experts) // 2),
                  "n_group_used": min(base.n_group_used, int(experts) // 4 or 1)}
    vocab = n_vocab or base.n_vocab
    return SyntheticSpec.preset(preset, n_layer=int(layers), n_expert=int(experts), n_vocab=vocab,
                                n_dense_lead=min(base.n_dense_lead, 1), **groups)


def placement(name: str, base: PlacementPlan) -> PlacementPlan:
    if name.startswith("first-"):
        return replace(base, experts_in_ram=int(name[6:]))
    if name.startswith("layers-"):
        return replace(base, n_gpu_layers=int(name[7:]))
    return {"gpu": replace(base, experts_in_ram="none"),
            "experts-ram": replace(base, experts_in_ram="all"),
            "cpu": replace(base, n_gpu_layers=0, op_offload=False)}[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", required=True, help="PRESET:LAYERS:EXPERTS")
    parser.add_argument("--placement", action="append", default=[])
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--ubatch", type=int, default=512)
    parser.add_argument("--cache-type", default="f16", help="the KV cache's type (K and V)")
    parser.add_argument("--vocab", type=int, default=8192, help="0: the preset's")
    args = parser.parse_args(argv)
    amx = "amx_int8" in detect_cpu(Path("/"), True, []).flags
    vocab = args.vocab or "the preset's"
    print(f"ctx {args.ctx}, ubatch {args.ubatch}, cache {args.cache_type}, vocab {vocab}")
    print("| shape | placement | device | kind | llama.cpp MiB | model MiB | error |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder, EngineClient.spawn() as engine:
        gpus = [d.name for d in engine.info().devices if d.kind == "gpu"][:1]
        for text in args.shape:
            spec = shape_spec(text, args.vocab)
            (path,) = write_synthetic_model(Path(folder) / f"{spec.name}.gguf", spec)
            model = read_model(path)
            for name in args.placement or ["gpu", "experts-ram"]:
                # no mmap: weight buffers then hold each tensor once (with mmap, llama.cpp also
                # reports the mapped file span beside repacked copies)
                base = PlacementPlan(n_ctx=args.ctx, n_ubatch=args.ubatch, split_mode="none", use_mmap=False,
                                     type_k=args.cache_type, type_v=args.cache_type)
                plan = placement(name, base)
                result = engine.load(LoadParams(model=str(path), placement=plan, telemetry=False))
                real: dict[tuple[str, str], int] = {}
                for a in result.allocations:
                    if a.kind in KINDS:
                        real[(a.device, a.kind)] = real.get((a.device, a.kind), 0) + a.bytes
                on_gpu = gpus if plan.n_gpu_layers != 0 else []
                for device in memory_by_device(model, plan, on_gpu, amx=amx):
                    for kind, field in KINDS.items():
                        modelled = getattr(device, field)
                        measured = real.get((device.device, kind), 0)
                        if not measured and not modelled:
                            continue
                        error = (modelled - measured) / measured if measured else float("inf")
                        worst = max(worst, abs(error))
                        print(f"| {text} | {name} | {device.device} | {kind} | {measured / 2**20:.1f} | "
                              f"{modelled / 2**20:.1f} | {error:+.1%} |", flush=True)
                engine.unload()
            path.unlink()
    print(f"largest error: {worst:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
