"""The planner: a placement that fits a machine, with a verdict and reasons in plain words.

Dense parts (attention, norms, router, shared experts, output) and the KV cache go to the
GPUs first; with several GPUs, llama.cpp's layer split spreads the layers over them in
proportion to their usable VRAM. Then routed experts stay on each GPU layer by layer while
its VRAM lasts, the first layers of its range going to RAM first; with one GPU that is
"routed experts of the first N layers in RAM" with the smallest N that fits. What is in RAM
must fit the RAM budget, or llama.cpp's mmap streams it from the SSD (slow). Only GPUs the
installed llama.cpp build can drive are planned for (app/advisor/devices.py). With an engine
that can keep hot experts in VRAM (patch 0004), the VRAM left for routed experts may instead
hold a cache of the RAM layers' most chosen experts, each GPU's for its own layers: the split
predicted to decode fastest wins (app/advisor/cache_split.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from app.advisor.cache_split import Split, cache_splits
from app.advisor.devices import PlanGpu, usable_gpus
from app.advisor.expert_cache import ram_expert_bytes
from app.advisor.memory import (
    RAM_HEADROOM,
    VRAM_HEADROOM,
    DeviceMemory,
    expert_cache_pack_devices,
    layer_devices,
    memory_by_device,
    tensor_device,
)
from app.advisor.search import largest
from app.advisor.speed import Prediction, SpeedRange, predict
from app.advisor.streaming import (
    TYPICAL_DISK,
    StreamPlan,
    page_fault_plan,
    read_rate,
    stream_plan,
    streaming_decode,
    with_stream,
)
from app.advisor.threads import thread_advice
from app.engine.placement import (
    CPU_DEVICE,
    ExpertCacheMode,
    ExpertCachePolicy,
    PlacementPlan,
    TensorOverride,
    copies_cap_text,
    expert_layer_pattern,
    tensor_overrides,
)
from app.engine.protocol import WAITING_COPIES, BuildInfo
from app.gguf.info import GGUFModel
from app.hardware.bandwidth import RamBandwidth
from app.hardware.disk import DiskSpeed
from app.hardware.model import Hardware
from app.units import gib

Verdict = Literal["fits_on_gpu", "fits_with_expert_offload", "fits_in_ram", "fits_streaming_from_ssd",
                  "does_not_fit"]
# Verdicts that run at full speed for the machine (no SSD reads on every token).
FITTING: frozenset[str] = frozenset({"fits_on_gpu", "fits_with_expert_offload", "fits_in_ram"})


@dataclass
class Plan:
    """What the advisor proposes: the placement to load, whether it fits, and why."""

    placement: PlacementPlan
    verdict: Verdict
    reasons: list[str]
    memory: list[DeviceMemory]  # CPU first, then each GPU
    experts_in_ram_layers: int = 0  # how many MoE layers keep their routed experts in RAM
    warnings: list[str] = field(default_factory=list)
    gpus: list[PlanGpu] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)  # threads, NUMA
    speed: Prediction | None = None

    def device(self, name: str) -> DeviceMemory:
        return next(m for m in self.memory if m.device == name)


def experts_in_ram_placement(base: PlacementPlan, in_ram: set[int], model: GGUFModel) -> PlacementPlan:
    """``base`` with the routed experts of the layers ``in_ram`` in RAM: the shortcut when
    they are those of the first N layers, else one override rule (after the user's own)."""
    n = max(in_ram) + 1 if in_ram else 0
    if in_ram == {layer for layer in model.moe_layers if layer < n}:
        shortcut = "none" if n == 0 else "all" if in_ram == set(model.moe_layers) else n
        return replace(base, n_gpu_layers=-1, experts_in_ram=shortcut)
    rule = TensorOverride(expert_layer_pattern(sorted(in_ram)), CPU_DEVICE)
    return replace(base, n_gpu_layers=-1, experts_in_ram="none", overrides=[*base.overrides, rule])


def plan_for(model: GGUFModel, hardware: Hardware, n_ctx: int, base: PlacementPlan | None = None,
             build: BuildInfo | None = None, ram: RamBandwidth | None = None,
             predict_speed: bool = True, disk: DiskSpeed | None = None,
             profile: list[list[int]] | None = None, hot_experts: bool | None = None) -> Plan:
    """The placement of ``model`` on ``hardware`` for a context of ``n_ctx`` tokens.

    ``base`` carries the settings the planner does not choose (cache types, n_ubatch, ...);
    ``build`` (the engine's BuildInfo) limits the plan to the GPUs the build can use; ``ram``
    (the RAM probe's figures) and ``disk`` (the disk probe's, for the model's drive) feed the
    speed prediction; ``profile`` (remembered routing) the expected hit rates of the expert
    caches. ``hot_experts``: whether the engine can keep hot experts in VRAM (None: as
    ``build`` says; no without one). The cache is weighed only with ``predict_speed``: its
    choice rests on the predicted decode speed.
    """
    base = replace(base or PlacementPlan(), n_ctx=n_ctx)
    gpus, lost = usable_gpus(hardware, build)
    if not gpus:
        placement = replace(base, n_gpu_layers=0, experts_in_ram="none")
        plan = evaluate(model, hardware, placement, [], ram, predict_speed, disk=disk, profile=profile)
        plan.reasons[:0] = lost or ["no usable GPU: every layer runs from RAM"]
        return plan
    budgets = {g.device: g.free - VRAM_HEADROOM for g in gpus}
    base = layer_split(base, list(budgets.values()))
    names = [g.device for g in gpus]
    moe = model.moe_layers
    everything = set(moe)
    worst = memory_by_device(model, experts_in_ram_placement(base, everything, model), names)
    for g in gpus:
        need = _by(worst, g.device).total
        if need > budgets[g.device]:
            plan = evaluate(model, hardware, experts_in_ram_placement(base, everything, model),
                            gpus, ram, predict_speed=False)
            plan.verdict = "does_not_fit"
            plan.reasons = [
                f"even with every routed expert in RAM, {g.device} needs {gib(need)} (attention, "
                f"shared weights, {gib(_by(worst, g.device).kv)} KV cache, "
                f"{gib(_by(worst, g.device).compute)} compute) and {g.name} has "
                f"{gib(max(budgets[g.device], 0))} usable ({gib(g.free)} free less "
                f"{gib(VRAM_HEADROOM)} headroom)",
                "lower the context size or use a q8_0 KV cache",
            ]
            return plan
    # Each GPU's bytes depend only on its own layers: per GPU, the fewest of its MoE layers
    # (from the start of its range) whose experts must go to RAM, by binary search.
    owner = layer_devices(base, model.n_layer, names)
    in_ram: set[int] = set()
    for g in gpus:
        mine = [layer for layer in moe if owner[layer] == g.device]
        low, high = 0, len(mine)
        while low < high:
            mid = (low + high) // 2
            trial = experts_in_ram_placement(base, in_ram | set(mine[:mid]), model)
            if _by(memory_by_device(model, trial, names), g.device).total <= budgets[g.device]:
                high = mid
            else:
                low = mid + 1
        in_ram |= set(mine[:low])
    placement = experts_in_ram_placement(base, in_ram, model)
    plan = evaluate(model, hardware, placement, gpus, ram, predict_speed, disk=disk, profile=profile)
    if hot_experts is None:
        hot_experts = build is not None and build.expert_cache_patch
    if (hot_experts and predict_speed and base.expert_cache == "off"
            and not base.no_host and plan.verdict == "fits_with_expert_offload"):
        plan = _fastest_split(model, hardware, plan, base, gpus, budgets, in_ram, ram, disk, profile)
    if predict_speed and plan.placement.expert_cache == "dynamic" and not plan.placement.use_mmap:
        plan = _faster_copy_policy(model, hardware, plan, gpus, ram, disk, profile)
    return plan


def layer_split(base: PlacementPlan, budgets: list[int]) -> PlacementPlan:
    """``base`` spread over several GPUs by llama.cpp's layer split, in proportion to their
    usable VRAM ``budgets`` (llama.cpp's order); as it is for one GPU."""
    if len(budgets) < 2:
        return base
    total = sum(max(b, 0) for b in budgets) or 1
    return replace(base, split_mode="layer", tensor_split=[round(max(b, 0) / total, 3) for b in budgets])


def cache_split_candidates(model: GGUFModel, base: PlacementPlan, in_ram: set[int], budgets: dict[str, int],
                           mode: ExpertCacheMode = "static") -> list[Split]:
    """The splits of the VRAM for routed experts with hot experts in VRAM, around ``base`` with
    the routed experts of the layers ``in_ram`` in RAM, on GPUs with ``budgets`` usable bytes
    (by device, llama.cpp's order): each GPU's layers split as the planner fills that GPU, each
    cache as large as every GPU holds. What the planner weighs and autotune measures."""
    names = list(budgets)
    owner = layer_devices(base, model.n_layer, names)
    ranges = [[layer for layer in model.moe_layers if owner[layer] == name] for name in names]
    n_min = [sum(1 for layer in mine if layer in in_ram) for mine in ranges]

    def fits(placement: PlacementPlan) -> bool:
        memory = memory_by_device(model, placement, names)
        return all(_by(memory, name).total <= budget for name, budget in budgets.items())

    return cache_splits(model, ranges, n_min, lambda layers: experts_in_ram_placement(base, layers, model),
                        fits, mode)


def _fastest_split(model: GGUFModel, hardware: Hardware, plan: Plan, base: PlacementPlan, gpus: list[PlanGpu],
                   budgets: dict[str, int], in_ram: set[int], ram: RamBandwidth | None,
                   disk: DiskSpeed | None, profile: list[list[int]] | None) -> Plan:
    """``plan`` (whole layers' experts in VRAM, the experts of ``in_ram`` in RAM) or a split of
    its VRAM for routed experts with hot experts in VRAM, whichever is predicted to decode
    fastest; its reasons say which splits were weighed. Caches refreshed as tokens decode are
    weighed where their copies run beside decoding, from pinned memory (mmap off): there the
    H100 measured them 1.08-1.43x as fast as their static sets (docs/benchmarks.md)."""
    weighed = []
    for mode in ("static",) if base.use_mmap else ("static", "dynamic"):
        for split in cache_split_candidates(model, base, in_ram, budgets, mode):
            candidate = evaluate(model, hardware, split.placement, gpus, ram, disk=disk, profile=profile)
            if candidate.verdict == plan.verdict:  # else more experts in RAM than RAM holds
                weighed.append((split, candidate))
    if not weighed or plan.speed is None:
        return plan
    split, best = max(weighed, key=lambda pair: _decode_mid(pair[1]))
    assert best.speed is not None and best.speed.expert_hit_rate is not None
    cache = (f"{split.describe(len(model.moe_layers))}{_packs_by_gpu(model, split, gpus)}, expected to "
             f"serve {best.speed.expert_hit_rate} of those layers' selections: decode "
             f"{best.speed.decode} predicted")
    whole = (f"{plan.speed.decode} with the experts of {len(in_ram)} layers in RAM and the others' "
             "whole in VRAM")
    if _decode_mid(best) <= _decode_mid(plan):
        plan.reasons.append(f"hot experts in VRAM weighed, slower here: at best {cache}, against {whole}")
        return plan
    kind = ", refreshed as tokens decode" if split.placement.expert_cache == "dynamic" else ""
    best.reasons.append(f"hot experts in VRAM ({split.name}{kind}): {cache}, against {whole}")
    return best


def _faster_copy_policy(model: GGUFModel, hardware: Hardware, plan: Plan, gpus: list[PlanGpu],
                        ram: RamBandwidth | None, disk: DiskSpeed | None,
                        profile: list[list[int]] | None) -> Plan:
    """``plan`` (a dynamic cache copying beside decoding) with the copy setting predicted to
    decode fastest: thrifty or eager (the copies read RAM as misses do, so where the CPU's reads
    are bound by RAM's bandwidth thrifty wins, where by its cores eager's extra hits do), and
    where eager's copies would outlast the CPU's part of a token on the link to the GPU, eager
    with its copies a token capped (``EAGER_CAPS`` a cached layer)."""
    mine = plan.placement

    def setting(p: PlacementPlan) -> tuple[str, int]:
        return p.expert_cache_policy, p.expert_cache_uploads

    def weigh(policy: ExpertCachePolicy, uploads: int) -> Plan:
        if setting(mine) == (policy, uploads):
            return plan
        trial = replace(mine, expert_cache_policy=policy, expert_cache_uploads=uploads)
        return evaluate(model, hardware, trial, gpus, ram, disk=disk, profile=profile)

    weighed = [weigh("thrifty", 0), weigh("eager", 0)]
    eager = weighed[1].speed
    if eager is not None and eager.copy_link_wait > 0:
        n_layers = len(ram_expert_bytes(model, mine, [g.device for g in gpus]))
        weighed += [weigh("eager", max(1, round(cap * n_layers))) for cap in EAGER_CAPS]
    if setting(mine) not in {setting(c.placement) for c in weighed}:
        weighed.append(plan)
    best = max((c for c in weighed if c.verdict == plan.verdict), key=_decode_mid)
    if best is plan or _decode_mid(best) <= _decode_mid(plan) * (1 + COPY_SETTING_MARGIN):
        return plan
    assert plan.speed is not None and best.speed is not None and eager is not None
    policy, uploads = setting(best.placement)
    why = COPY_POLICY_WHY[policy]
    if eager.copy_link_wait > 0 and (policy == "thrifty" or uploads):
        uncapped = "uncapped, " if uploads else ""
        why = (f"{uncapped}eager's copies would take {eager.copy_link_wait * 1e3:.1f} ms a token longer on "
               "the link to the GPU than the CPU's part of the token")
    name = f"{policy} expert copies{copies_cap_text(uploads)}"
    was = f"{mine.expert_cache_policy}{copies_cap_text(mine.expert_cache_uploads)}"
    best.reasons.append(f"{name}: decode {best.speed.decode} predicted, against {plan.speed.decode} "
                        f"{was} ({why})")
    return best


# another copy setting than the plan's must be predicted this much faster: below it the
# prediction cannot tell them apart, and autotune measures them anyway
COPY_SETTING_MARGIN = 0.02
# eager's copies capped at these many a cached layer and decoded token, weighed where its
# copies would outlast the CPU's part of a token on the link (the engine's expert_cache_uploads)
EAGER_CAPS = (0.6, 0.8, 1.0, 1.2)
# why a copy policy wins, as the speed model sees it
COPY_POLICY_WHY = {
    "eager": "this CPU's reads are bound by its cores, not RAM: copies cost it little, hits save it work",
    "thrifty": "this CPU's reads are bound by RAM, which the copies share",
}


def _packs_by_gpu(model: GGUFModel, split: Split, gpus: list[PlanGpu]) -> str:
    """Where a split's packs are, with several GPUs (each on its router's GPU)."""
    if len(gpus) < 2:
        return ""
    names = [g.device for g in gpus]
    held = list(expert_cache_pack_devices(model, split.placement, split.layers, names).values())
    return " (packs: " + ", ".join(f"{held.count(name)} on {name}" for name in names) + ")"


def _decode_mid(plan: Plan) -> float:
    return plan.speed.decode.mid if plan.speed else 0.0


def evaluate(model: GGUFModel, hardware: Hardware, placement: PlacementPlan,
             gpus: list[PlanGpu] | None = None, ram: RamBandwidth | None = None,
             predict_speed: bool = True, build: BuildInfo | None = None,
             disk: DiskSpeed | None = None, profile: list[list[int]] | None = None) -> Plan:
    """Memory, verdict, reasons, advice and speed of a given placement (the user's own, or
    the planner's choice). ``gpus`` None: the usable GPUs of ``hardware`` (and ``build``).
    A placement streaming from the SSD gets a RAM expert cache sized to the RAM left, its hit
    rate from ``profile`` (remembered routing counts) or skewed routing, and its reads timed at
    ``disk``'s speed (a typical NVMe drive's when not measured)."""
    if gpus is None:
        gpus, _ = usable_gpus(hardware, build)
    if placement.n_gpu_layers == 0:
        gpus = []
    names = [g.device for g in gpus]
    memory = memory_by_device(model, placement, names, amx="amx_int8" in hardware.cpu.flags)
    in_ram = _expert_layers_in_ram(model, placement, names)
    reasons: list[str] = []
    over = []
    for g in gpus:
        m, budget = _by(memory, g.device), g.free - VRAM_HEADROOM
        reasons.append(f"{g.device} ({g.name}): {gib(m.total)} of {gib(max(budget, 0))} usable "
                       f"(KV cache {gib(m.kv)} for {placement.n_ctx:,} tokens)")
        if m.total > budget:
            over.append(f"{g.device} needs {gib(m.total)}, {gib(max(budget, 0))} usable: "
                        "keep more routed experts in RAM, or lower the context size")
    if not gpus:
        first: Verdict = "fits_in_ram"
    elif in_ram:
        expert_bytes = sum(t.n_bytes for t in model.tensors
                           if t.tensor_class == "routed_experts" and t.layer in in_ram)
        reasons.append(f"routed experts of {len(in_ram)} of {len(model.moe_layers)} layers "
                       f"in RAM ({gib(expert_bytes)})")
        first = "fits_with_expert_offload"
    else:
        reasons.append("every layer, routed experts included, is on the GPU")
        first = "fits_on_gpu"
    ram_budget = hardware.memory.available - RAM_HEADROOM if hardware.memory else None
    verdict, more, warnings = _ram_verdict(first, memory[0], ram_budget)
    if verdict == "fits_streaming_from_ssd" and placement.repack and not gpus:
        # the OS can drop and re-read only pages of the mapped file, not repacked copies (with
        # a GPU, llama.cpp keeps weights in RAM in the file or in pinned memory, never repacked)
        placement = replace(placement, repack=False)
        warnings.append("llama.cpp's weight repacking is off (--no-repack): its copies would "
                        "have to fit in RAM, and only weights left in the file stream from the SSD")
    stream = None
    if verdict == "fits_streaming_from_ssd" and ram_budget is not None and placement.use_mmap \
            and placement.expert_stream != "advise":
        # the layers whose routed experts are in RAM: all of them without a GPU
        layers = sorted(in_ram) if in_ram else list(model.moe_layers)
        stream = _stream_plan(model, placement, memory[0], layers, ram_budget, profile)
        if stream is not None:
            placement = with_stream(placement, stream)
            more.append(stream.describe())
        else:
            stream = page_fault_plan(model, layers, placement.n_expert_used or model.n_expert_used)
            placement = replace(placement, expert_stream="off", expert_stream_bytes=0)
            warnings.append("too little RAM for an expert cache of one token's experts a layer: "
                            "the experts come in by page faults, far slower")
    if over:
        verdict, more = "does_not_fit", over + more
    cpu_busy = not gpus or bool(in_ram) or 0 <= placement.n_gpu_layers <= model.n_layer
    threads = thread_advice(hardware, memory[0].total, cpu_busy)
    if not placement.n_threads:
        placement = replace(placement, n_threads=threads.n_threads)
    speed = None
    if predict_speed:
        speed = predict(model, placement, {g.device: g.gpu for g in gpus}, ram,
                        hardware.cpu.physical_cores, profile=profile)
        if stream is not None:
            speed = _with_ssd_reads(speed, stream, disk)
    advice = list(threads.advice)
    if gpus and in_ram and placement.repack and not placement.no_host and placement.expert_cache == "off":
        advice.append(NO_HOST_ADVICE)  # not with hot experts: the cache needs the file's layout
    if gpus and in_ram and placement.expert_cache == "dynamic" and placement.use_mmap:
        advice.append(DYNAMIC_MMAP_ADVICE)
    return Plan(placement, verdict, reasons + more, memory, experts_in_ram_layers=len(in_ram),
                warnings=warnings, gpus=list(gpus), advice=advice, speed=speed)


def _stream_plan(model: GGUFModel, placement: PlacementPlan, cpu: DeviceMemory, layers: list[int],
                 ram_budget: int, profile: list[list[int]] | None) -> StreamPlan | None:
    streamed = set(layers)
    experts = sum(t.n_bytes for t in model.tensors
                  if t.tensor_class == "routed_experts" and t.layer in streamed)
    k = placement.n_expert_used or model.n_expert_used
    return stream_plan(model, layers, ram_budget, cpu.kv + cpu.compute,
                       max(0, cpu.weights - experts), k, profile)


def _with_ssd_reads(speed: Prediction, stream: StreamPlan, disk: DiskSpeed | None) -> Prediction:
    """The in-RAM prediction plus each token's wait for its SSD reads."""
    notes = list(speed.notes)
    if disk is None:
        disk = TYPICAL_DISK
        notes.append("the drive's speed not measured: a typical NVMe SSD's assumed "
                     f"({TYPICAL_DISK.random_read_bw / 1e9:.0f} GB/s for expert-sized reads)")
    seconds = (1 / speed.decode.low, 1 / speed.decode.high)
    low, high = streaming_decode(seconds, stream, disk) or (speed.decode.low, speed.decode.high)
    notes.append(f"decode waits for {stream.ssd_bytes_per_token / 1e9:.2f} GB of SSD reads per "
                 f"token at {read_rate(stream, disk) / 1e9:.1f} GB/s "
                 f"({stream.ssd_bytes_per_token_uniform / 1e9:.2f} GB with uniform routing)")
    return replace(speed, decode=SpeedRange(low, high), notes=notes)


# the dynamic cache copies experts beside decoding only from the GPU's pinned host memory:
# what the engine says at such a load, said before it
DYNAMIC_MMAP_ADVICE = f"dynamic hot experts with mmap on: {WAITING_COPIES}"
# llama.cpp's no_host, for a plan with experts in RAM and a GPU (issue 17, measured on an H200)
NO_HOST_ADVICE = ("--no-host puts the experts in RAM into the CPU's repacked layouts: about 10-18% "
                  "faster decode, about half the prefill (op offload no longer copies them to the "
                  "GPU); autotune tries it")


def max_context(model: GGUFModel, hardware: Hardware, base: PlacementPlan | None = None,
                step: int = 256, accept: frozenset[str] = FITTING,
                build: BuildInfo | None = None) -> int:
    """The largest context (a multiple of ``step``, at most n_ctx_train) whose plan's verdict
    is in ``accept``; 0 when not even ``step`` tokens fit."""
    def fits(n_ctx: int) -> bool:
        return plan_for(model, hardware, n_ctx, base, build, predict_speed=False).verdict in accept

    steps = largest(1, max(model.n_ctx_train, step) // step, lambda n: fits(n * step))
    return (steps or 0) * step


def _expert_layers_in_ram(model: GGUFModel, placement: PlacementPlan, gpus: list[str]) -> set[int]:
    if not gpus:
        return set(model.moe_layers)
    devices = layer_devices(placement, model.n_layer, gpus)
    rules = tensor_overrides(placement, model.n_layer)
    return {t.layer for t in model.tensors if t.tensor_class == "routed_experts" and t.layer is not None
            and tensor_device(t.name, t.layer, devices, rules) == CPU_DEVICE}


def _by(memory: list[DeviceMemory], name: str) -> DeviceMemory:
    return next(m for m in memory if m.device == name)


def _ram_verdict(verdict: Verdict, cpu: DeviceMemory, ram_budget: int | None
                 ) -> tuple[Verdict, list[str], list[str]]:
    """Downgrade ``verdict`` when the RAM part does not fit ``ram_budget``."""
    assert cpu.device == CPU_DEVICE
    if ram_budget is None:
        return verdict, [f"RAM: {gib(cpu.total)} needed (available RAM unknown)"], []
    if cpu.total <= ram_budget:
        return verdict, [f"RAM: {gib(cpu.total)} of {gib(ram_budget)} usable"], []
    resident = cpu.total - cpu.weights  # KV cache and buffers cannot be paged from the file
    if resident > ram_budget:
        return "does_not_fit", [
            f"RAM: the KV cache and buffers alone need {gib(resident)}, {gib(max(ram_budget, 0))} usable"
        ], []
    short = cpu.total - ram_budget
    return "fits_streaming_from_ssd", [f"RAM: {gib(cpu.total)} needed, {gib(ram_budget)} usable"], [
        f"{gib(short)} of weights do not fit in RAM and will be read from the SSD as tokens "
        "need them, slower than from RAM; more RAM or a smaller quant avoids it"
    ]
