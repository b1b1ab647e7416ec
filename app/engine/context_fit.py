"""Fitting a long conversation into the context: which whole turns a context policy leaves out.

A turn is a user message with the assistant answers, tool calls and tool results after it, so
that leaving one out never orphans a tool result or breaks the user/assistant alternation some
templates insist on. System messages are always kept, and so is the latest turn (the question
being answered). Sizes are counted as the model will see them: the kept messages rendered by
the chat template and tokenized, so template markup and special tokens are included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.engine.protocol import ChatMessage, ContextPolicy

# Room kept for the answer when a request sets no max_tokens: a quarter of the context. Less
# would cut answers short right after a drop; more would drop history the model could still see.
ANSWER_SHARE = 4


@dataclass
class Fitted:
    """The messages to send and how many of the conversation's were left out."""

    messages: list[ChatMessage]
    dropped: int


def answer_room(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens a policy leaves free for the answer: the request's max_tokens, else a quarter of
    the context; never more than half of it, so that a huge max_tokens still keeps history."""
    wanted = max_tokens if max_tokens is not None else n_ctx // ANSWER_SHARE
    return max(1, min(wanted, n_ctx // 2))


def turns(messages: list[ChatMessage]) -> list[list[int]]:
    """Indexes of the non-system messages, grouped in turns (each from a user message up to the
    next); messages before the first user message form a turn of their own."""
    groups: list[list[int]] = []
    for i, message in enumerate(messages):
        if message.role == "system":
            continue
        if message.role == "user" or not groups:
            groups.append([])
        groups[-1].append(i)
    return groups


def drop_order(n_turns: int, policy: ContextPolicy) -> list[int]:
    """The turns in the order the policy leaves them out; the last turn is never left out."""
    older = list(range(n_turns - 1))
    if policy is ContextPolicy.DROP_MIDDLE and older:
        return older[1:] + older[:1]  # the first turn often states the task: it goes last
    return older


def fit(messages: list[ChatMessage], policy: ContextPolicy,
        size: Callable[[list[ChatMessage]], int], limit: int) -> Fitted:
    """The fewest whole turns left out (in the policy's order) for ``size(kept) <= limit``.
    Leaving out more turns never makes a prompt longer, so a binary search over how many
    renders O(log turns) prompts. When even the last turn alone is over ``limit``, it is
    returned with every other turn left out: the caller decides whether that still fits."""
    groups = turns(messages)
    order = drop_order(len(groups), policy)

    def kept(k: int) -> list[ChatMessage]:
        gone = {i for turn in order[:k] for i in groups[turn]}
        return [m for i, m in enumerate(messages) if i not in gone]

    def dropped(k: int) -> int:
        return sum(len(groups[turn]) for turn in order[:k])

    if size(messages) <= limit:
        return Fitted(messages, 0)
    low, high = 1, len(order)  # the answer is in [low, high]; high: all but the last turn
    while low < high:
        middle = (low + high) // 2
        if size(kept(middle)) <= limit:
            high = middle
        else:
            low = middle + 1
    return Fitted(kept(high), dropped(high))
