"""The Dashboard's words beside its plots: the "Now" box (the engine's latest figures, this
machine's CPU, the expert hit rate, the last answer) and how the loaded placement was chosen."""

from __future__ import annotations

import math

from app.engine.protocol import ChatResult, EngineStats
from app.ui.app_state import LoadedModel
from app.ui.widgets.counts import count_text
from app.units import memory_size


def now_lines(stats: EngineStats | None, cpu: float | None, hit: float | None, window_hit: float | None,
              window_s: float, answer: ChatResult | None) -> list[str]:
    """The "Now" box: ``hit`` is the hit rate since the load (NaN: no expert used yet),
    ``window_hit`` the one of the last ``window_s`` seconds."""
    lines = []
    if stats is None:
        lines.append("No engine figures yet.")
    else:
        lines.append(f"Engine: {stats.state}" + (f", {stats.model}" if stats.model else ""))
        if stats.state == "generating":
            lines.append(f"Decode {stats.decode_tps:.1f} t/s, prefill "
                         f"{stats.prefill_tps:.1f} t/s, {stats.tokens_generated} tokens")
        for memory in stats.memory:
            name = "RAM" if memory.device == "RAM" else memory.device
            lines.append(f"{name}: {memory_size(memory.used)} of {memory_size(memory.total)}")
        lines.append(f"Engine RSS: {memory_size(stats.rss)}")
        lines.extend(storage_lines(stats))
    if cpu is not None:
        lines.append(f"CPU: {cpu:.0f}%")
    if hit is not None and not math.isnan(hit):
        recent = "" if window_hit is None else f", last {window_s:g} s {window_hit:.0%}"
        lines.append(f"Expert hit rate: {hit:.0%} since load{recent}")
    elif hit is not None:
        lines.append("Expert hit rate: no expert used yet")
    if answer is not None:
        decode = f"decode {answer.decode_tps:.1f} t/s, " if answer.decode_tps > 0 else ""
        lines.append(f"Last answer: {count_text(answer.completion_tokens, 'token')}, prefill "
                     f"{answer.prefill_tps:.0f} t/s, {decode}"
                     f"first token after {answer.first_token_s * 1000:.0f} ms")
    return lines


def plan_words(loaded: LoadedModel) -> str:
    """How the loaded placement was chosen and what the advisor predicted for it."""
    plan = loaded.plan
    if plan is None:  # autotune's winner, or a load made without the advisor
        return ""
    lines = [f"Placement: {plan.origin}."]
    speed = plan.plan.speed
    if speed is not None:
        lines.append(f"The advisor predicted decode {speed.decode}, prefill {speed.prefill}.")
    return " ".join(lines)


def storage_lines(stats: EngineStats) -> list[str]:
    """What decoding reads from the SSD, when it reads anything."""
    storage = stats.storage
    if storage is None or storage.total_bytes == 0:
        return []
    lines = [f"SSD while decoding: {storage.read_bps / 1e9:.2f} GB/s, "
             f"{memory_size(storage.bytes_per_token)} per token (last steps)"]
    if storage.ram_hit_rate is not None:
        speed = "" if storage.stream_read_bps is None else \
            f"; its reads ran at {storage.stream_read_bps / 1e9:.2f} GB/s"
        lines.append(f"RAM expert cache: {storage.ram_hit_rate:.0%} of experts found{speed}")
    return lines
