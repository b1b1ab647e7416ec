"""Sampling presets offered per conversation (plain data; the chat page shows them): the
built-in ones (sampling only) and the user's own (app.store.UserPreset: a system prompt and
sampling saved under a name), kept in a conversation's ``preset`` as ``user:NAME``."""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.protocol import ContextPolicy, Sampling
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
USER_PREFIX = "user:"


def user_key(name: str) -> str:
    """A user preset's name as a conversation keeps it."""
    return USER_PREFIX + name


def user_name(key: str) -> str | None:
    """The user preset a conversation's ``preset`` names, or None for a built-in or custom."""
    return key[len(USER_PREFIX):] if key.startswith(USER_PREFIX) else None

# what the user picks for a conversation longer than the context, in their words
CONTEXT_POLICIES: dict[ContextPolicy, str] = {
    ContextPolicy.DROP_MIDDLE: "Leave out the middle (keep the system prompt, the first and "
                               "the latest turns)",
    ContextPolicy.ROLLING_WINDOW: "Rolling window (keep the system prompt and the latest turns)",
    ContextPolicy.STOP: "Stop (refuse to answer once the conversation is too long)",
}


def sampling_for(conversation: Conversation) -> Sampling:
    """The engine's sampling settings for a conversation (a named preset wins over the
    conversation's stored temperature/top_p; "custom" uses them)."""
    preset = PRESETS.get(conversation.preset)
    temperature = preset.temperature if preset else conversation.temperature
    top_p = preset.top_p if preset else conversation.top_p
    # max_tokens 0: none, the answer runs until it ends or the context is full
    return Sampling(temperature=temperature, top_p=top_p,
                    max_tokens=conversation.max_tokens or None)


def context_policy_for(conversation: Conversation) -> ContextPolicy:
    """The conversation's context policy (the default one for a value this version lacks)."""
    return ContextPolicy.or_default(conversation.context_policy, ContextPolicy.DROP_MIDDLE)
