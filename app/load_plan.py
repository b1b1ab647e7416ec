"""Which model file, and with which placement, a load uses: decided the same way by the desktop
app (File > Load, the library's Load) and the CLI (``chat``, ``serve``). No Qt.

A model is named by a path (a .gguf file or any shard), or by its name in the library
(``owner/repo:QUANT`` for a download, the file name for an import). Its placement is the
autotuned one if this model was tuned on this machine for this context, else the advisor's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.advisor.planner import Plan, plan_for
from app.engine import routing_profiles
from app.engine.placement import PlacementPlan
from app.engine.protocol import BuildInfo, LoadParams
from app.gguf.info import GGUFModel, read_model
from app.hardware import Hardware, detect
from app.hardware.bandwidth import ram_bandwidth
from app.hardware.disk import DiskProbeError, DiskSpeed, disk_speed
from app.hub.library import Library, LibraryError
from app.tune.autotune import machine_id, remembered, tune_key


@dataclass
class LoadPlan:
    params: LoadParams
    plan: Plan  # the advisor's, with its verdict and reasons, whichever placement is used
    source: Literal["autotuned", "advisor", "manual"]  # manual: set by hand on the Advisor page

    @property
    def origin(self) -> str:
        """Where the placement comes from, in words."""
        return {"autotuned": "autotuned on this machine", "advisor": "the advisor's plan",
                "manual": "set by hand"}[self.source]

    def describe(self) -> str:
        """For people: where the placement comes from, and what it is."""
        return f"placement ({self.origin}): {self.params.placement.describe()}"


def resolve_model(name: str, library: Library | None = None) -> Path:
    """The model file ``name`` means: a path to a file, else a library name. LibraryError
    naming the library's models (or how to add one) when it is neither."""
    path = Path(name).expanduser()
    if path.is_file() or name.endswith(".gguf"):
        return path  # a missing .gguf path is the loader's to report, with its own error
    try:
        model = (library or Library()).get(name)
    except LibraryError as exc:
        raise LibraryError(f"{name!r} is neither a model file nor a model in the library. {exc} "
                           "See them with 'moedesk-cli library'; download one with "
                           "'moedesk-cli download owner/repo --quant Q4_K_M'.") from None
    if model.problem:
        raise LibraryError(f"{name} cannot be loaded: {model.problem}.")
    return model.path


def model_disk_speed(model: GGUFModel) -> DiskSpeed | None:
    """The disk probe's figures for the drive under the model's largest shard, for reads of
    one routed expert's slice of a tensor; None when the file cannot be probed."""
    try:
        largest = max(model.shards, key=lambda p: p.stat().st_size)
        # an expert's up, gate and down slices lie in three tensors: each is one read
        block = model.expert_bytes() // 3
        return disk_speed(largest, block or (4 << 20))
    except (DiskProbeError, OSError):
        return None  # not downloaded yet, or unreadable: the prediction assumes a typical SSD


def plan_load(path: Path, n_ctx: int, hardware: Hardware | None = None,
              build: BuildInfo | None = None) -> LoadPlan:
    """The placement for ``path`` on this machine (blocking: reads the header, may probe RAM
    bandwidth once): the autotuned one if this model was tuned here for this context, else
    the advisor's."""
    model = read_model(path)
    hardware = hardware or detect()
    n_ctx = min(n_ctx, model.n_ctx_train or n_ctx)
    ram = ram_bandwidth()
    # the routing remembered from earlier runs: the expert caches' expected hit rates
    profile = routing_profiles.remembered_for(model)
    plan = plan_for(model, hardware, n_ctx, build=build, ram=ram, profile=profile)
    if plan.verdict == "fits_streaming_from_ssd":
        # again with the model's drive (probed once): what streaming's figures rest on
        plan = plan_for(model, hardware, n_ctx, build=build, ram=ram, disk=model_disk_speed(model),
                        profile=profile)
    tuned = autotuned(path, n_ctx, hardware, build)
    if tuned is not None:
        return LoadPlan(LoadParams(model=str(path), placement=tuned), plan, "autotuned")
    return LoadPlan(LoadParams(model=str(path), placement=plan.placement), plan, "advisor")


def autotuned(path: Path, n_ctx: int, hardware: Hardware, build: BuildInfo | None) -> PlacementPlan | None:
    """The placement autotune found fastest for this model file on this machine (its CPU and
    the GPU the build drives) at this context, if it was tuned here; None otherwise. Every
    load path (File > Load, the Advisor page, the CLI) loads it when there is one."""
    gpu = next((d.name for d in build.devices if d.kind == "gpu"), None) if build else None
    try:
        tuned = remembered(tune_key(path, machine_id(hardware.cpu.model, gpu), None))
    except OSError:
        return None  # the file is gone: nothing is tuned for it
    return tuned if tuned is not None and tuned.n_ctx == n_ctx else None
