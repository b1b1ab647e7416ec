"""Records llama.cpp's graph allocator on the CUDA stand-in: app/advisor/cuda_graphs.json.

For each family the README names (its preset's structure: MLA, expert groups, dense leading
layers, shared experts, GLM's q/k norms, gpt-oss's sliding windows and sinks), each placement
(all on the GPU, every routed expert in RAM, the first layers' experts in RAM, whole layers on
the CPU) and attention (flash attention with an f16 cache, with a q8_0 cache, off), four models
of a few layers are loaded on the stand-in (bench/cuda_sim/load.py) with the allocator traced.
Three, with different widths, expert counts, ubatch and context, name each tensor's size as a
product of the model's dimensions (app.advisor.compute_buffer.graph_dims); the fourth, with other
widths again, checks that the events replayed with its dimensions give llama.cpp's buffers
exactly. The advisor replays the events for the model at hand (app/advisor/compute_buffer.py).

    python bench/cuda_sim/build.py --llama-cpp SRC
    python bench/cuda_sim/record.py            # all families, ~8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.advisor.compute_buffer import (  # noqa: E402
    GPU_ALIGNMENT,
    GRAPHS,
    HOST_ALIGNMENT,
    graph_dims,
    graph_key,
    replay,
    weight_copy_bytes,
)
from app.engine.placement import PlacementPlan  # noqa: E402
from app.gguf.info import read_model  # noqa: E402
from app.synthetic import SyntheticSpec  # noqa: E402
from app.synthetic.writer import write_synthetic_header  # noqa: E402
from bench.cuda_sim.load import stand_in_load  # noqa: E402

# bytes per value: "bytes/values" of a block for quantized types (a quantized KV cache's views)
TYPE_BYTES = {"f32": "4", "f16": "2", "bf16": "2", "i32": "4", "i64": "8", "q8_0": "34/32", "q4_0": "18/32",
              "q4_1": "20/32", "q5_0": "22/32", "q5_1": "24/32", "iq4_nl": "18/32"}
BUFFERS = {"CUDA0": GPU_ALIGNMENT, "CUDA_Host": HOST_ALIGNMENT}
# Per family: the preset, and the widths of three more probes (the first is the preset itself):
# three name each tensor's dimensions (two let products of widths coincide: E K = H T in both),
# the fourth checks. Head sizes stay (flash attention's kernels exist for a few), as do MLA's ranks.
FAMILIES = {
    "qwen3-30b-a3b": ({"n_embd": 2816, "n_head": 40, "n_head_kv": 8, "n_ff_exp": 1024, "n_expert": 64,
                       "n_expert_used": 6, "n_vocab": 152960},
                      {"n_embd": 3584, "n_head": 64, "n_ff_exp": 1536},
                      {"n_embd": 3072, "n_head": 24, "n_head_kv": 2, "n_ff_exp": 896, "n_expert_used": 4}),
    "mixtral-8x7b": ({"n_embd": 4608, "n_head": 36, "n_head_kv": 4, "n_ff_exp": 12288, "n_expert": 4,
                      "n_expert_used": 3, "n_vocab": 33024},
                     {"n_embd": 5120, "n_head": 40, "n_ff_exp": 16384, "n_expert": 16},
                     {"n_embd": 3584, "n_head": 28, "n_head_kv": 4, "n_ff_exp": 9728, "n_vocab": 32768}),
    "deepseek-v3": ({"n_embd": 5120, "n_head": 96, "n_ff_exp": 1536, "n_ff": 12288, "q_lora_rank": 1024,
                     "n_expert": 128, "n_expert_groups": 4, "n_group_used": 2, "n_expert_used": 6,
                     "n_vocab": 130304},
                    {"n_embd": 6144, "n_head": 64, "n_ff_exp": 2560, "n_ff": 14336, "n_expert": 192,
                     "n_expert_groups": 4, "n_group_used": 3},
                    {"n_embd": 4096, "n_head": 48, "n_ff_exp": 1024, "n_ff": 10240, "q_lora_rank": 768}),
    "kimi-k2": ({"n_embd": 5120, "n_head": 96, "n_ff_exp": 1536, "n_ff": 12288, "q_lora_rank": 1024,
                 "n_expert": 192, "n_expert_used": 6, "n_vocab": 164864},
                {"n_embd": 6144, "n_head": 32, "n_ff_exp": 2560},
                {"n_embd": 4096, "n_head": 48, "n_ff_exp": 1024, "n_ff": 10240, "q_lora_rank": 768,
                 "n_expert": 96}),
    "glm-4.5": ({"n_embd": 4096, "n_head": 64, "n_head_kv": 4, "n_ff_exp": 1024, "n_ff": 9216, "n_expert": 80,
                 "n_expert_used": 6, "n_vocab": 152576},
                {"n_embd": 6144, "n_head": 48, "n_ff_exp": 2048},
                {"n_embd": 3072, "n_head": 40, "n_head_kv": 2, "n_ff_exp": 768, "n_ff": 7168,
                 "n_expert_used": 4}),
    "glm-4.5-air": ({"n_embd": 5120, "n_head": 64, "n_head_kv": 4, "n_ff_exp": 1024, "n_ff": 9216,
                     "n_expert": 64, "n_expert_used": 6, "n_vocab": 152576},
                    {"n_embd": 3072, "n_head": 48, "n_ff_exp": 2048},
                    {"n_embd": 2560, "n_head": 40, "n_head_kv": 2, "n_ff_exp": 768, "n_ff": 7168,
                     "n_expert_used": 4}),
    "gpt-oss-120b": ({"n_embd": 3392, "n_head": 48, "n_head_kv": 4, "n_ff_exp": 2048, "n_expert": 64,
                      "n_expert_used": 3, "n_vocab": 202112},
                     {"n_embd": 2048, "n_head": 32, "n_ff_exp": 3136},
                     {"n_embd": 4096, "n_head": 40, "n_head_kv": 2, "n_ff_exp": 1536, "n_expert_used": 5}),
}
# contexts and ubatches whose ratios differ from probe to probe (a cache dimension must not pass
# for a ubatch one: KV = 8 T in one probe and 16 T in another named gpt-oss's V indices wrongly)
PROBE_PLANS = ({"n_ctx": 4096, "n_ubatch": 512}, {"n_ctx": 5376, "n_ubatch": 384},
               {"n_ctx": 7424, "n_ubatch": 1024}, {"n_ctx": 4864, "n_ubatch": 640})
# flash attention on (the default on CUDA) with an f16 cache and with a quantized one (llama.cpp
# rotates K and V before quantizing them: more nodes), and off
ATTENTION = {"fa": {"flash_attn": "auto"},
             "fa-q8": {"flash_attn": "auto", "type_k": "q8_0", "type_v": "q8_0"},
             "no-fa": {"flash_attn": "off"}}


# Models of 2-5 layers (tests, the H200's memory bench) peak elsewhere than long ones: their
# own recordings, all on the GPU and experts in RAM, flash attention on
SMALL_LAYERS = (2, 3, 4, 5)


def probe_spec(preset: str, widths: dict[str, object], n_layer: int = 0) -> SyntheticSpec:
    """A family's model with ``widths``: one dense leading layer where it has them, then six
    MoE layers; or ``n_layer`` layers in all."""
    base = SyntheticSpec.preset(preset)
    dense = min(base.n_dense_lead, 1)
    return SyntheticSpec.preset(preset, n_layer=n_layer or dense + 6, n_dense_lead=dense, **widths)


def placement_fields(kind: str, spec: SyntheticSpec) -> dict[str, object]:
    """Each placement with three layers on either side of a change (two were too few: the layout
    of the layers after a change settles in the third)."""
    return {"gpu": {"experts_in_ram": "none"}, "ram": {"experts_in_ram": "all"},
            "mixed": {"experts_in_ram": spec.n_dense_lead + 3},
            "classic": {"n_gpu_layers": spec.n_layer + 1 - 3}}[kind]


def trace_events(text: str, buffer: str) -> tuple[list[dict], int]:
    """The trace's events of one buffer; renames in place (same size) folded into their parent."""
    events, end, alias = [], 0, {}
    for line in text.splitlines():
        head, _, tail = line.partition("|")
        p = head.split()
        if len(p) < 2 or p[1] != buffer:
            continue
        if p[0] == "END":
            end = int(p[2])
            continue
        if p[0] == "F":
            events.append({"k": "F", "id": alias.get(p[2], p[2])})
            continue
        name, _, shape = tail.partition("|")
        if p[0] == "A":  # A buffer tensor size offset op|name| shape
            events.append({"k": "A", "id": p[2], "size": int(p[3]), "op": p[5], "name": name,
                           "shape": shape.split(), "buffer": buffer})
            continue
        parent = alias.get(p[3], p[3])  # R buffer tensor parent size parent_size op|name| shape
        if p[4] == p[5]:  # the same block under another name (the experts' adds: n_expert_used - 1)
            alias[p[2]] = parent
            continue
        events.append({"k": "R", "id": p[2], "parent": parent, "size": int(p[4]), "op": p[6], "name": name,
                       "shape": shape.split(), "buffer": buffer})
    return events, end


def expressions(dims: dict[str, int]) -> dict[str, int]:
    """Every product, sum or quotient of up to three dims (or 2: K and V side by side) a tensor
    dimension may be."""
    dims = {**dims, "2": 2}
    found = dict(dims)
    for a, b in itertools.combinations_with_replacement(dims, 2):
        found.setdefault(f"{a}*{b}", dims[a] * dims[b])
    for a, b in itertools.combinations(dims, 2):
        found.setdefault(f"{a}+{b}", dims[a] + dims[b])
    for a, b, c in itertools.combinations_with_replacement(dims, 3):
        found.setdefault(f"{a}*{b}*{c}", dims[a] * dims[b] * dims[c])
    if "G" in dims:
        found["X/G"] = dims["X"] // dims["G"]
    return found


def name_dim(values: list[int], candidates: list[dict[str, int]]) -> str:
    if len(set(values)) == 1 and values[0] <= 4:
        return str(values[0])
    hits = [n for n in candidates[0] if all(c.get(n) == v for c, v in zip(candidates, values, strict=True))]
    if not hits:
        if len(set(values)) == 1:
            return str(values[0])
        raise ValueError(f"no dims make {values}")
    simplest = min(sum(n.count(c) for c in "*+/") for n in hits)
    hits = sorted(n for n in hits if sum(n.count(c) for c in "*+/") == simplest)
    if len(hits) > 1 and len(set(values)) > 1:  # varying alike in every probe: the probes can't tell
        raise ValueError(f"{values} is any of {hits}: give the probes other widths")
    return hits[0]


def size_text(events: list[dict], candidates: list[dict[str, int]]) -> str:
    first = events[0]
    inner = first["name"].split("#")
    if len(inner) == 3 and inner[1].endswith(".weight"):  # a weight op offload copies in
        name = inner[1]
        return "w:" + (name.split(".", 2)[2] if name.startswith("blk.") else name)

    def shape(offset: int, n: int = 4) -> tuple[str, list[str]]:
        types = {e["shape"][offset] for e in events}
        assert len(types) == 1, (first["name"], types)
        return types.pop(), [name_dim([int(e["shape"][offset + i]) for e in events], candidates)
                             for i in range(1, n + 1)]

    type_name, dims = shape(0)
    size = TYPE_BYTES[type_name]
    per_value = Fraction(*map(int, size.split("/"))) if "/" in size else Fraction(int(size))
    ne = [int(v) for v in first["shape"][1:5]]
    strides = [[Fraction(int(e["shape"][5 + i])) / per_value for e in events] for i in range(3)]
    strided = per_value * (ne[0] + sum((n - 1) * s[0] for n, s in zip(ne[1:], strides, strict=True)))
    # ggml-cuda pads a quantized tensor by the rest of a 512-value row (not the host buffer)
    quantized_on_cuda = "/" in size and ne[0] % 512 and first["buffer"] == "CUDA0"
    padding = per_value * (512 - ne[0] % 512) if quantized_on_cuda else 0
    unpadded = first["size"] - padding
    if unpadded == per_value * ne[0] * ne[1] * ne[2] * ne[3] or unpadded != strided:
        text = "*".join([size, *(d for d in dims if d != "1")])
    else:  # a strided view copied whole: ggml_nbytes spans the strides (in values here)
        named = [name_dim([int(v) for v in stride], candidates) if dims[1 + i] != "1" else "0"
                 for i, stride in enumerate(strides)]  # a dim of 1 has no stride to name
        text = f"v:{size}:{','.join(dims)}:{','.join(named)}"
    if padding:
        text = f"p:{size}:{dims[0]}:{text}"
    if first["op"] == "FLASH_ATTN_EXT":
        k = "*".join(d for d in shape(8)[1] if d != "1")
        v = "*".join(d for d in shape(16)[1] if d != "1")
        return f"fa:{text}:{k}:{v}:{first['shape'][24]}"
    return text


def symbolize(probes: list[tuple[dict[str, int], list[dict]]]) -> list[str]:
    """The events of probes of one structure as sized by dims."""
    (_, base), *_ = probes
    if any(len(events) != len(base) for _, events in probes):
        raise ValueError("the probes' graphs differ: " + ", ".join(str(len(e)) for _, e in probes))
    # dims equal in every probe of a family (gpt-oss's key and value lengths) are one: the first
    same = {b for a, b in itertools.combinations(probes[0][0], 2)
            if all(dims.get(a) == dims.get(b) for dims, _ in probes)}
    candidates = [expressions({k: v for k, v in dims.items() if k not in same}) for dims, _ in probes]
    ids: dict[str, int] = {}
    out = []
    for i, event in enumerate(base):
        same = [events[i] for _, events in probes]
        if event["k"] == "F":
            out.append(f"F {ids[event['id']]}")
            continue
        ids[event["id"]] = len(ids)
        size = size_text(same, candidates)
        out.append(f"A {size}" if event["k"] == "A" else f"R {ids[event['parent']]} {size}")
    return out


def record_family(preset: str, folder: Path) -> dict[str, dict]:
    graphs = record(preset, folder, itertools.product(("gpu", "ram", "mixed", "classic"), ATTENTION))
    for n_layer in SMALL_LAYERS:
        graphs.update(record(preset, folder, itertools.product(("gpu", "ram"), ("fa",)), n_layer))
    return graphs


def record(preset: str, folder: Path, variants: Iterable[tuple[str, str]],
           n_layer: int = 0) -> dict[str, dict]:
    """The graphs of ``preset``'s structure for each (placement, attention) of ``variants``,
    with ``n_layer`` layers (0: the long probe) in their key."""
    specs = [probe_spec(preset, widths, n_layer) for widths in ({}, *FAMILIES[preset])]
    paths = []
    for i, spec in enumerate(specs):
        paths.append(write_synthetic_header(folder / f"{preset}-{n_layer}-{i}.gguf", spec))
    graphs = {}
    for kind, flash in variants:
        loads = []
        for path, spec, plan_fields in zip(paths, specs, PROBE_PLANS, strict=True):
            fields = {**plan_fields, **placement_fields(kind, spec), **ATTENTION[flash]}
            plan = dataclasses.replace(PlacementPlan(split_mode="none", use_mmap=False), **fields)
            loads.append((graph_dims(read_model(path), plan), stand_in_load(path, fields), plan))
        graph = {}
        for buffer, alignment in BUFFERS.items():
            traced = [(dims, trace_events(load.trace, buffer)[0]) for dims, load, _ in loads]
            events = symbolize(traced[:3])
            for (dims, load, plan), path in zip(loads, paths, strict=True):
                model = read_model(path)
                got = replay(";".join(events), dims, weight_copy_bytes(model), plan, alignment)
                if got != load.buffers[buffer]:
                    raise SystemExit(f"{preset} {kind} {flash} {buffer}: replay {got} != llama.cpp "
                                     f"{load.buffers[buffer]} ({path.name})")
            graph[buffer] = ";".join(events)
        key = f"{graph_key(read_model(paths[0]))}|{kind}|{flash}" + (f"|{n_layer}" if n_layer else "")
        graphs[key] = graph
        print(f"{key}: replays exact", flush=True)
    return graphs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="append", choices=list(FAMILIES), help="default: all")
    parser.add_argument("--out", type=Path, default=GRAPHS)
    args = parser.parse_args(argv)
    graphs: dict[str, dict] = json.loads(args.out.read_text())["graphs"] if args.out.exists() else {}
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.family or FAMILIES:
            graphs.update(record_family(preset, Path(folder)))
            recorded = {"recorded_by": "bench/cuda_sim/record.py", "graphs": dict(sorted(graphs.items()))}
            text = json.dumps(recorded, indent=1)
            args.out.write_text(text + "\n")  # after each family: a failure keeps the others
    return 0


if __name__ == "__main__":
    sys.exit(main())
