"""Placements under a VRAM budget, the way each strategy would choose them.

The strategies a user meets elsewhere, computed with the advisor's memory model so that they
are compared at the same budget:

* ``classic``: llama.cpp's layer offload (``-ngl N``): as many whole layers on the GPU as fit.
* ``experts-ram``: every routed expert in RAM (``--cpu-moe``), everything else on the GPU.
* ``n-cpu-moe``: llama.cpp's ``--n-cpu-moe N`` with the smallest N that fits, at llama.cpp's
  default batch settings.
* ``advisor``: MoE Desk's planner (app.advisor.planner.plan_for) for a GPU of that size.

and, with hot experts in VRAM (engine patch 0004), ``cache_split_plans``: the VRAM of a plan's
whole layers' experts spent on a cache of the RAM layers' most chosen experts instead, the
planner's own candidates (app/advisor/cache_split.py).

A budget stands for a GPU of that size: a 80 GB card can measure what a 12 GB one would do.
A budget of several GPUs (a machine's own, as a tune on it finds them) spreads the layers over
them by llama.cpp's layer split, as the planner does. Whether a measured load really stayed
inside the budget is checked by ``measure`` against what llama.cpp allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from app.advisor.expert_cache import ram_expert_bytes
from app.advisor.memory import VRAM_HEADROOM, DeviceMemory, memory_by_device
from app.advisor.planner import cache_split_candidates, layer_split, plan_for
from app.advisor.search import largest
from app.engine.placement import CPU_DEVICE, ExpertCacheMode, PlacementPlan
from app.engine.protocol import DeviceInfo
from app.gguf.info import GGUFModel
from app.hardware.model import Gpu, Hardware

STRATEGIES = ("classic", "experts-ram", "n-cpu-moe", "advisor")


@dataclass
class Budget:
    """A GPU of ``vram`` bytes, named as llama.cpp names it (``CUDA0``); with several GPUs, the
    others in ``more`` (name -> bytes, in llama.cpp's order)."""

    gpu: str
    vram: int
    more: dict[str, int] = field(default_factory=dict)

    @property
    def vram_by_gpu(self) -> dict[str, int]:
        return {self.gpu: self.vram, **self.more}

    @property
    def gpus(self) -> list[str]:
        return list(self.vram_by_gpu)

    def usable_by_gpu(self) -> dict[str, int]:
        """What weights, KV cache and compute buffers may take on each GPU (the rest: the CUDA
        context)."""
        return {gpu: vram - VRAM_HEADROOM for gpu, vram in self.vram_by_gpu.items()}

    @property
    def usable(self) -> int:
        """What they may take on all its GPUs together."""
        return sum(self.usable_by_gpu().values())

    def describe(self) -> str:
        return ", ".join(f"{vram / 1e9:.1f} GB on {gpu}" for gpu, vram in self.vram_by_gpu.items())


def budget_for(gpus: list[DeviceInfo], requested: int | None = None) -> Budget:
    """The budget of the engine's ``gpus``: with ``requested`` bytes, one GPU of that size (the
    first standing in for it), else every GPU's free memory."""
    first, *others = gpus
    if requested:
        return Budget(first.name, requested)
    return Budget(first.name, first.memory_free, {g.name: g.memory_free for g in others})


def gpu_memory(model: GGUFModel, plan: PlacementPlan, budget: Budget) -> list[DeviceMemory]:
    """What the memory model puts on each of the budget's GPUs under ``plan``."""
    return [m for m in memory_by_device(model, plan, budget.gpus) if m.device != CPU_DEVICE]


def gpu_bytes(model: GGUFModel, plan: PlacementPlan, budget: Budget) -> int:
    """Bytes the memory model puts on the budget's GPUs under ``plan``."""
    return sum(m.total for m in gpu_memory(model, plan, budget))


def fits(model: GGUFModel, plan: PlacementPlan, budget: Budget) -> bool:
    """Whether ``plan`` fits each of the budget's GPUs (and puts nothing on others)."""
    usable = budget.usable_by_gpu()
    return all(m.total <= usable.get(m.device, 0) for m in gpu_memory(model, plan, budget))


def classic(model: GGUFModel, budget: Budget, base: PlacementPlan) -> PlacementPlan:
    """Whole layers on the GPU (the output layer counts as one, as in llama.cpp), no overrides."""
    def layers(n: int) -> PlacementPlan:
        return replace(base, n_gpu_layers=n, experts_in_ram="none", overrides=[])

    n = largest(0, model.n_layer + 1, lambda n: fits(model, layers(n), budget))
    return layers(n or 0)


def experts_ram(model: GGUFModel, budget: Budget, base: PlacementPlan) -> PlacementPlan:
    return replace(base, n_gpu_layers=-1, experts_in_ram="all", overrides=[])


def first_n_in_ram(model: GGUFModel, budget: Budget, base: PlacementPlan) -> int:
    """The smallest N such that, with the routed experts of the first N layers in RAM, the
    rest fits the budget (``model.n_layer`` when even all of them in RAM does not fit)."""
    def ok(n: int) -> bool:  # true from some N on: GPU bytes fall as N grows
        return fits(model, with_experts_in_ram(base, n, model.n_layer), budget)

    low, high = 0, model.n_layer
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    return low


def with_experts_in_ram(base: PlacementPlan, n: int, n_layer: int) -> PlacementPlan:
    """``base`` with the routed experts of the first ``n`` layers in RAM, all layers offloaded."""
    shortcut: str | int = "none" if n <= 0 else "all" if n >= n_layer else n
    return replace(base, n_gpu_layers=-1, experts_in_ram=shortcut, overrides=[])  # type: ignore[arg-type]


def one_layer_less(plan: PlacementPlan, n_layer: int) -> PlacementPlan | None:
    """The same kind of placement with one layer less on the GPU: one whole layer (classic)
    or one more layer's routed experts in RAM; None when nothing is left to move."""
    if plan.overrides:
        return None
    if plan.experts_in_ram == "none" and plan.n_gpu_layers >= 0:  # classic layer offload
        return replace(plan, n_gpu_layers=plan.n_gpu_layers - 1) if plan.n_gpu_layers > 0 else None
    n = 0 if plan.experts_in_ram == "none" else plan.experts_in_ram
    if isinstance(n, int) and n < n_layer:
        return with_experts_in_ram(plan, n + 1, n_layer)
    return None


def llama_cpp_settings(plan: PlacementPlan, base: PlacementPlan) -> PlacementPlan:
    """``plan``'s placement (layers, experts, KV cache type) at llama.cpp's default batch sizes,
    mmap and op offload, with ``base``'s threads and flash attention (what the user set)."""
    return replace(plan, n_batch=2048, n_ubatch=512, use_mmap=True, op_offload=True,
                   n_threads=base.n_threads, n_threads_batch=base.n_threads_batch,
                   flash_attn=base.flash_attn)


def n_cpu_moe(model: GGUFModel, budget: Budget, base: PlacementPlan) -> PlacementPlan:
    """llama.cpp's ``--n-cpu-moe N`` at its default batch sizes, N as small as fits."""
    defaults = llama_cpp_settings(base, base)
    return with_experts_in_ram(defaults, first_n_in_ram(model, budget, defaults), model.n_layer)


def advisor(model: GGUFModel, budget: Budget, base: PlacementPlan,
            hardware: Hardware | None = None) -> PlacementPlan:
    """The planner's placement on this machine with its GPUs cut to the budget."""
    gpus = [Gpu(vendor="nvidia", name=f"{name} ({vram / 1e9:.0f} GB budget)", vram_total=vram, vram_free=vram)
            for name, vram in budget.vram_by_gpu.items()]
    if hardware is None:
        from app.hardware import detect

        hardware = detect(nvml=False)
    return plan_for(model, replace(hardware, gpus=gpus), base.n_ctx, base).placement


def cache_split_plans(model: GGUFModel, plan: PlacementPlan, budget: Budget,
                      mode: ExpertCacheMode = "static") -> list[tuple[str, PlacementPlan]]:
    """``plan``'s VRAM for routed experts split between whole layers' experts and hot experts
    in VRAM around the layers whose experts it keeps in RAM, each split named ("whole layers",
    "half and half", "all cache") with its cache sized to the budget: the planner's candidates
    (on several GPUs, each GPU's layers split on their own)."""
    in_ram = set(ram_expert_bytes(model, plan, budget.gpus))
    base = replace(plan, experts_in_ram="none", overrides=[])  # the splits place the experts anew
    return [(split.name, split.placement)
            for split in cache_split_candidates(model, base, in_ram, budget.usable_by_gpu(), mode)]


def strategy_plans(model: GGUFModel, budget: Budget, base: PlacementPlan,
                   hardware: Hardware | None = None) -> dict[str, PlacementPlan]:
    """Each strategy's placement at this budget (over several GPUs, the layers split in
    proportion to their budgets, as the planner splits them)."""
    base = layer_split(base, list(budget.usable_by_gpu().values()))
    return {
        "classic": classic(model, budget, base),
        "experts-ram": experts_ram(model, budget, base),
        "n-cpu-moe": n_cpu_moe(model, budget, base),
        "advisor": advisor(model, budget, base, hardware),
    }


def describe(plan: PlacementPlan, n_layer: int) -> str:
    """A short placement label for tables: what is where, and the settings that differ."""
    if plan.experts_in_ram == "none" and plan.n_gpu_layers >= 0 and plan.n_gpu_layers <= n_layer:
        where = f"{plan.n_gpu_layers}/{n_layer + 1} layers on GPU"
    elif plan.experts_in_ram == "all":
        where = "all experts in RAM"
    elif plan.experts_in_ram == "none":
        where = "all on GPU"
    else:
        where = f"experts of {plan.experts_in_ram}/{n_layer} layers in RAM"
    extras = [f"ub {plan.n_ubatch}"]
    if plan.n_threads:
        extras.append(f"t {plan.n_threads}")
    if plan.type_k != "f16":
        extras.append(f"kv {plan.type_k}")
    if not plan.use_mmap:
        extras.append("no-mmap")
    if plan.flash_attn != "auto":
        extras.append(f"fa {plan.flash_attn}")
    if not plan.op_offload:
        extras.append("no-op-offload")
    if plan.no_host:
        extras.append("no-host")
    if plan.expert_cache != "off":
        size = (f"{plan.expert_cache_slots}/layer" if plan.expert_cache_slots
                else f"{plan.expert_cache_bytes / 2**30:.1f} GiB")
        extras.append(f"hot experts {size} {plan.expert_cache}")
    return f"{where} ({', '.join(extras)})"
