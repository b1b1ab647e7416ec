"""The advisor's answer for a model, a remote file or a whole Hub repo, as printable lines.

Shared by ``moedesk-cli advise`` and (later) the GUI's advisor page: both show the same data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.advisor.planner import Plan, plan_for
from app.engine.protocol import BuildInfo
from app.gguf.info import GGUFModel, read_model
from app.gguf.remote import read_remote_model
from app.hardware import Hardware
from app.hardware.bandwidth import RamBandwidth
from app.units import file_size, gib


@dataclass
class QuantAdvice:
    quant: str
    size: int
    plan: Plan | None  # None: the quant is incomplete in the repo, or its header is refused
    note: str = ""  # why there is no plan


def build_info() -> BuildInfo | None:
    """What the installed llama.cpp build can use, asked of a short-lived engine process;
    None (plan for the detected GPUs) when the engine cannot start."""
    from app.engine.client import EngineClient
    from app.errors import EngineError

    try:
        with EngineClient.spawn() as engine:
            return engine.info()
    except (EngineError, OSError):
        return None


def load_model_header(target: str, token: str | None = None) -> GGUFModel:
    """A local GGUF file (any shard) or an http(s) URL, read from its header only."""
    if target.startswith(("http://", "https://")):
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return read_remote_model(target, headers=headers).model
    return read_model(Path(target))


def advise_repo(repo_id: str, hardware: Hardware, n_ctx: int, token: str | None = None,
                endpoint: str | None = None, build: BuildInfo | None = None,
                ram: RamBandwidth | None = None) -> list[QuantAdvice]:
    """A plan for every quantization of a Hub repo, from the headers of its first shards.

    A quant whose header cannot be loaded (damaged, values llama.cpp refuses) gets no plan and
    a note saying why; the other quants are still planned."""
    from huggingface_hub import hf_hub_url

    from app.errors import ModelFileError
    from app.hub.repo import list_gguf_quants

    endpoint = endpoint or os.environ.get("HF_ENDPOINT")
    advice = []
    for quant in list_gguf_quants(repo_id, token=token, endpoint=endpoint):
        if not quant.complete:
            advice.append(QuantAdvice(quant.name, quant.total_size, None,
                                      f"incomplete: shards {', '.join(map(str, quant.missing_shards))} "
                                      "missing"))
            continue
        url = hf_hub_url(repo_id, quant.first_file, endpoint=endpoint)
        try:
            model = load_model_header(url, token)
        except ModelFileError as error:
            advice.append(QuantAdvice(quant.name, quant.total_size, None,
                                      f"cannot be loaded: {error.message}"))
            continue
        plan = plan_for(model, hardware, n_ctx, build=build, ram=ram)
        advice.append(QuantAdvice(quant.name, quant.total_size, plan))
    return advice


def plan_lines(model: GGUFModel, plan: Plan) -> list[str]:
    """The plan for one model: verdict, reasons, memory per device, what the engine loads."""
    lines = [f"{model.name}: {model.architecture}, {model.layers_text}, {model.n_expert} experts "
             f"({model.n_expert_used} active), {gib(model.size_bytes)}",
             f"Verdict: {plan.verdict.replace('_', ' ')}"]
    lines += [f"  - {reason}" for reason in plan.reasons]
    lines += [f"  ! {warning}" for warning in plan.warnings]
    lines.append(f"{'device':8} {'weights':>10} {'KV cache':>10} {'compute':>10} {'total':>10}")
    for m in plan.memory:
        lines.append(f"{m.device:8} {gib(m.weights):>10} {gib(m.kv):>10} {gib(m.compute):>10} "
                     f"{gib(m.total):>10}")
    if plan.speed is not None:
        s = plan.speed
        lines.append(f"Predicted speed: decode {s.decode}, prefill {s.prefill}")
        lines.append("  bytes read per token: " + ", ".join(
            f"{device} {n / 1e9:.2f} GB" if n >= 1e8 else f"{device} {n / 1e6:.1f} MB"
            for device, n in s.decode_bytes.items()))
        if s.expert_hit_rate is not None:
            basis = ("ranked by the remembered routing" if s.expert_hit_rate.source == "profile"
                     else "typical routing")
            lines.append(f"  hot experts in VRAM: expected to serve {s.expert_hit_rate} of their "
                         f"layers' routed selections ({basis})")
        lines += [f"  ({note})" for note in s.notes]
    lines += [f"Threads: {line}" for line in plan.advice[:1]]
    lines += [f"  {line}" for line in plan.advice[1:]]
    lines += f"Engine placement: {plan.placement.describe()}".splitlines()
    return lines


def repo_lines(repo_id: str, advice: list[QuantAdvice]) -> list[str]:
    """One row per quantization of a repo."""
    width = max([14, *(len(a.quant) for a in advice)])  # "BF16 (BF16/)": a name that tells two apart
    lines = [f"{repo_id}:", f"{'quant':{width}} {'size':>9}  {'verdict':26} {'experts in RAM':>15}"
                            f"  {'decode':>12}  {'prefill':>14}"]
    for a in advice:
        if a.plan is None:
            lines.append(f"{a.quant:{width}} {file_size(a.size):>9}  {a.note}")
            continue
        speed = a.plan.speed
        rates = f"  {speed.decode!s:>12}  {speed.prefill!s:>14}" if speed else ""
        lines.append(f"{a.quant:{width}} {file_size(a.size):>9}  {a.plan.verdict.replace('_', ' '):26} "
                     f"{a.plan.experts_in_ram_layers:>8} layers{rates}")
    return lines
