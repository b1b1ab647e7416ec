"""Parallel sequence slots: which llama.cpp sequence id a chat runs in, and what its KV holds.

A context made with ``n_seq_max = N`` keeps N sequences (ids 0..N-1) in its KV cache. Each
slot remembers the tokens whose K/V its sequence holds, so that a new chat goes to the free
slot sharing the longest prefix with its prompt and prefills only the rest (a follow-up turn
of a conversation finds its previous turn). When no slot shares at least half of the prompt
(an unrelated chat shares only the template's first tokens), the chat takes the slot unused
longest instead, keeping the others' conversations cached (llama-server's rule too). A slot
keeps its tokens after a chat ends, also a cancelled one (as llama-server's slots do): the
next chat trims what it does not share.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import llama_cpp

SIMILAR = 0.5  # share of a prompt a slot's cache must hold to be chosen for it


@dataclass(eq=False)
class Slot:
    """One sequence of the context."""

    seq_id: int
    kv_tokens: list[int] = field(default_factory=list)  # tokens whose K/V it holds, in order
    busy: bool = False
    last_used: int = -1  # when it last took a chat (a tie goes to the longest unused)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class SlotPool:
    """The N slots of one context; used by the batch loop's thread only."""

    def __init__(self, ctx: int, n_seq: int) -> None:
        self.memory = llama_cpp.llama_get_memory(ctx)
        # sliding-window layers (gpt-oss) keep only their window's cells (swa_full off)
        self.n_swa = llama_cpp.llama_model_n_swa(llama_cpp.llama_get_model(ctx))
        self.slots = [Slot(seq_id) for seq_id in range(n_seq)]
        self._clock = itertools.count()

    def free(self) -> int:
        return sum(not slot.busy for slot in self.slots)

    def take(self, prompt: list[int]) -> tuple[Slot, int]:
        """The free slot that shares the longest prefix with ``prompt`` if that is at least
        half of it, else the one unused longest; marked busy, with its KV trimmed to the
        common prefix; and the prefix's length. There must be a free slot."""
        free = [slot for slot in self.slots if not slot.busy]
        slot = max(free, key=lambda s: (common_prefix(s.kv_tokens, prompt), -s.last_used))
        if common_prefix(slot.kv_tokens, prompt) < SIMILAR * len(prompt):
            slot = min(free, key=lambda s: s.last_used)
        slot.busy = True
        slot.last_used = next(self._clock)
        return slot, self._reuse_prefix(slot, prompt)

    def _reuse_prefix(self, slot: Slot, prompt: list[int]) -> int:
        """Keep the slot's cached K/V of the common prefix; returns its length."""
        common = min(common_prefix(slot.kv_tokens, prompt), len(prompt) - 1)  # the last prompt
        # token is evaluated again: its logits give the first answer token
        if not self._window_kept(slot, common) or \
                not llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, common, -1):
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)  # the whole of it
            common = 0
        del slot.kv_tokens[common:]
        return common

    def _window_kept(self, slot: Slot, common: int) -> bool:
        """Whether the sliding-window layers still hold the ``n_swa`` cells before ``common``
        (asked before trimming: their oldest cell): they keep only the latest cells, so going
        back further (an earlier turn asked again) means prefilling from the start, as
        llama-server does without its checkpoints."""
        if not self.n_swa or common == 0:
            return True
        return llama_cpp.llama_memory_seq_pos_min(self.memory, slot.seq_id) <= max(0, common - self.n_swa)

    def release(self, slot: Slot) -> None:
        """The slot's chat has ended; its K/V stay for the next chat's prefix."""
        slot.busy = False

    def forget(self, slot: Slot) -> None:
        """Drop the slot's K/V (after a failed decode, its cache is not what it remembers)."""
        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        slot.kv_tokens.clear()
