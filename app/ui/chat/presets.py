"""Sampling presets offered per conversation (plain data; the chat page shows them)."""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.protocol import Sampling
from app.store import Conversation


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    temperature: float
    top_p: float
    description: str


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("precise", "Precise", 0.2, 0.9, "focused, repeatable answers: code, facts"),
    Preset("balanced", "Balanced", 0.7, 0.95, "the usual chat setting"),
    Preset("creative", "Creative", 1.0, 0.98, "more varied wording: stories, brainstorming"),
)}
CUSTOM = "custom"


def sampling_for(conversation: Conversation) -> Sampling:
    """The engine's sampling settings for a conversation (a named preset wins over the
    conversation's stored temperature/top_p; "custom" uses them)."""
    preset = PRESETS.get(conversation.preset)
    temperature = preset.temperature if preset else conversation.temperature
    top_p = preset.top_p if preset else conversation.top_p
    return Sampling(temperature=temperature, top_p=top_p, max_tokens=conversation.max_tokens)
