"""The placement and load options that ``moedesk-cli chat`` and ``serve`` share, how they
become what the engine loads, and the load progress bar (app/cli.py and app/serve/cli.py both
use them; neither imports the other for them)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from app.engine.placement import (
    DEFAULT_CONTEXT,
    CacheType,
    ExpertCacheMode,
    ExpertCachePolicy,
    ExpertStreamMode,
    PlacementPlan,
    TensorOverride,
)
from app.engine.protocol import LoadParams, Progress
from app.errors import PlacementError


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def experts_in_ram(value: str) -> str | int:
    if value in ("all", "none"):
        return value
    try:
        layers = int(value)
    except ValueError:
        layers = -1
    if layers < 0:
        raise argparse.ArgumentTypeError("expected 'all', 'none' or a layer count") from None
    return layers


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, not {text!r}")
    return value


def expert_cache_size(text: str) -> tuple[int, int]:
    """argparse type: (experts a layer, 0) for "32", (0, bytes) for "4GiB" / "4G" / "4GB"."""
    value = text.strip()
    number = value.rstrip("GgIiBb")
    try:
        amount = float(number) if number != value else int(value)
    except ValueError:
        amount = -1
    if amount <= 0:
        raise argparse.ArgumentTypeError(f"expected experts a layer (32) or a size (4GiB), not {text!r}")
    if number == value:
        return int(amount), 0
    return 0, int(amount * 2**30)


def byte_size(text: str) -> int:
    """argparse type: a size in GiB ("8GiB", "8G", "8GB", "8"), as bytes."""
    value = text.strip().rstrip("GgIiBb")
    try:
        amount = float(value)
    except ValueError:
        amount = -1
    if amount <= 0:
        raise argparse.ArgumentTypeError(f"expected a size in GiB (8GiB), not {text!r}")
    return int(amount * 2**30)


def tensor_override(value: str) -> TensorOverride:
    pattern, sep, device = value.rpartition("=")
    if not sep or not pattern or not device:
        raise argparse.ArgumentTypeError("expected REGEX=DEVICE, e.g. 'ffn_.*_exps=CPU'")
    return TensorOverride(pattern=pattern, device=device)


def add_placement_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "placement", "Without --experts-in-ram, --gpu-layers or --override, the placement is the "
        "one the desktop app would load (autotuned on this machine, else the advisor's); the "
        "other options below change it.")
    group.add_argument("--experts-in-ram", type=experts_in_ram, default=None,
                       help="routed experts kept in RAM: all, none, or those of the first N layers")
    group.add_argument("--gpu-layers", type=int, default=None, help="layers on the GPU (-1: all)")
    group.add_argument("--override", type=tensor_override, action="append", default=[],
                       metavar="REGEX=DEVICE", help="send matching tensors to a device "
                       "(like llama.cpp's -ot); repeatable, first match wins")
    group.add_argument("--ctx", type=positive_int, default=None,
                       help=f"context size in tokens (default: {DEFAULT_CONTEXT:,}, as the app's)")
    group.add_argument("--threads", type=non_negative_int, default=None,
                       help="CPU threads (0: physical cores)")
    group.add_argument("--experts-used", type=positive_int, default=None,
                       help="active experts per token (default: the model's own)")
    group.add_argument("--flash-attn", choices=("auto", "on", "off"), default=None)
    group.add_argument("--cache-type", default=None, choices=typing.get_args(CacheType),
                       help="KV cache type (default: f16)")
    group.add_argument("--no-mmap", action="store_true", help="read the model into RAM")
    group.add_argument("--no-repack", action="store_true",
                       help="keep CPU weights as in the file (llama.cpp's --no-repack): slower "
                            "CPU kernels, but the OS can page them from the SSD")
    group.add_argument("--no-host", action="store_true",
                       help="with a GPU, CPU weights in the CPU's repacked layouts (llama.cpp's "
                            "no_host): faster decode from RAM, slower prefill")
    add_expert_cache_args(group)
    group.add_argument("--expert-stream", choices=typing.get_args(ExpertStreamMode), default=None,
                       help="routed experts in RAM read from the SSD by the engine when decoding "
                            "(a model larger than RAM): cache (a RAM cache of experts filled by "
                            "parallel reads), advise (the kernel asked ahead), off (page faults)")
    group.add_argument("--expert-stream-size", type=byte_size, default=None, metavar="GiB",
                       help="cache: RAM for the expert cache (e.g. 8GiB)")
    group.add_argument("--expert-stream-threads", type=positive_int, default=None,
                       help="cache: reads at a time (default 16)")


def add_expert_cache_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                          size_help: str = "experts a layer (e.g. 32) or VRAM for the cache (e.g. 4GiB)",
                          mode_help: str = "keep the hottest routed experts of RAM layers in VRAM (needs "
                                           "a GPU)") -> None:
    """--expert-cache, --expert-cache-size, --expert-cache-uploads, --expert-cache-policy: hot
    experts in VRAM (chat, serve, bench)."""
    parser.add_argument("--expert-cache", choices=typing.get_args(ExpertCacheMode), default="off",
                        help=f"{mode_help}: static (each layer's most chosen), dynamic (refreshed as "
                             "it decodes)")
    parser.add_argument("--expert-cache-size", type=expert_cache_size, default=(0, 0), metavar="N|GiB",
                        help=size_help)
    parser.add_argument("--expert-cache-uploads", type=positive_int, default=0,
                        help="dynamic: experts copied into VRAM per token, at most (default: the "
                             "policy's, one or two per cached layer)")
    parser.add_argument("--expert-cache-policy", choices=typing.get_args(ExpertCachePolicy),
                        default="thrifty",
                        help="dynamic: thrifty copies only experts that will be hit more than once "
                             "(CPU reads bound by RAM); eager copies more for more hits (a CPU bound by "
                             "compute, as on servers; needs --no-mmap); autotune measures both")


# options that set one plan field as they are, when given: option's dest -> the plan's field
DIRECT_SETTINGS = {"ctx": "n_ctx", "threads": "n_threads", "experts_used": "n_expert_used",
                   "flash_attn": "flash_attn", "expert_stream": "expert_stream",
                   "expert_stream_size": "expert_stream_bytes",
                   "expert_stream_threads": "expert_stream_threads"}


def given_settings(args: argparse.Namespace) -> dict[str, object]:
    """The placement settings the user gave (besides where the experts go), as plan fields."""
    given: dict[str, object] = {field: getattr(args, option) for option, field in DIRECT_SETTINGS.items()
                                if getattr(args, option) is not None}
    if args.cache_type is not None:
        given["type_k"] = given["type_v"] = args.cache_type
    if args.no_mmap:
        given["use_mmap"] = False
    if args.no_repack:
        given["repack"] = False
    if args.no_host:
        given["no_host"] = True
    if args.expert_cache != "off":
        given.update(expert_cache=args.expert_cache, expert_cache_slots=args.expert_cache_size[0],
                     expert_cache_bytes=args.expert_cache_size[1],
                     expert_cache_uploads=args.expert_cache_uploads,
                     expert_cache_policy=args.expert_cache_policy)
    return given


def plan_from_args(args: argparse.Namespace) -> PlacementPlan:
    """The user's own placement: all routed experts in RAM unless told otherwise."""
    plan = PlacementPlan(
        n_gpu_layers=-1 if args.gpu_layers is None else args.gpu_layers,
        experts_in_ram="all" if args.experts_in_ram is None else args.experts_in_ram,
        overrides=list(args.override), n_ctx=DEFAULT_CONTEXT)
    return dataclasses.replace(plan, **given_settings(args))  # type: ignore[arg-type]


def load_params_from_args(args: argparse.Namespace, model: str) -> tuple[LoadParams, str]:
    """What ``chat`` and ``serve`` load, and a line saying which placement and why: ``model``
    is a file or a library name; the placement is the user's when they named where experts go
    (--experts-in-ram, --gpu-layers, --override), else the one the desktop app would load,
    with the other placement options given applied over it. LibraryError, ModelFileError,
    PlacementError (a plan that does not fit) say what to do."""
    from app.load_plan import plan_load, resolve_model

    path = resolve_model(model)
    if args.experts_in_ram is not None or args.gpu_layers is not None or args.override:
        plan = plan_from_args(args)
        return LoadParams(model=str(path), placement=plan), f"placement (as given): {plan.describe()}"
    planned = plan_load(path, args.ctx or DEFAULT_CONTEXT)
    if planned.plan.verdict == "does_not_fit":
        raise PlacementError(f"{path.name} does not fit this machine: {'; '.join(planned.plan.reasons)}.",
                             "See 'moedesk-cli advise' for the numbers, pick a smaller quant or "
                             "context, or place it yourself (--experts-in-ram).")
    given = given_settings(args)
    placement = dataclasses.replace(planned.params.placement, **given)  # type: ignore[arg-type]
    line = planned.describe() if not given else (
        f"placement ({planned.source}, with your options): {placement.describe()}")
    return LoadParams(model=str(path), placement=placement), line


class ProgressBar:
    """A one-line load progress bar on stderr, redrawn only when it visibly changes."""

    WIDTH = 30

    def __init__(self) -> None:
        self.drawn = -1

    def __call__(self, progress: Progress) -> None:
        filled = int(progress.fraction * self.WIDTH)
        if filled == self.drawn:
            return
        self.drawn = filled
        # on a terminal, redraw in place; in a log, one line per step
        end = "" if sys.stderr.isatty() else "\n"
        print(f"\rloading [{'#' * filled}{'.' * (self.WIDTH - filled)}] {progress.fraction:4.0%}",
              end=end, file=sys.stderr, flush=True)
