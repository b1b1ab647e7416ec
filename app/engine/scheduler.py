"""Fair turns for waiting chats: round-robin over the clients that have something waiting.

The engine runs one chat at a time. When several clients (the GUI, the OpenAI server, a CLI)
wait, the next turn goes to the client served least recently, and within one client to its
oldest request, so a client that sends many requests cannot starve one that sends a few.
Pure data: the engine's server (``app.engine.server``) holds one and does all the I/O.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

OwnerT = TypeVar("OwnerT", bound=Hashable)
ItemT = TypeVar("ItemT")


class FairQueue(Generic[OwnerT, ItemT]):
    """Items waiting per owner; ``pop`` takes the oldest item of the least recently served owner."""

    def __init__(self) -> None:
        # insertion order breaks ties between owners served equally long ago: first come first
        self._waiting: dict[OwnerT, deque[ItemT]] = {}
        self._last_turn: dict[OwnerT, int] = {}
        self._turns = itertools.count()

    def __len__(self) -> int:
        return sum(len(items) for items in self._waiting.values())

    def push(self, owner: OwnerT, item: ItemT) -> None:
        """Add an item at the end of its owner's line."""
        self._waiting.setdefault(owner, deque()).append(item)

    def pop(self) -> tuple[OwnerT, ItemT] | None:
        """The next item to run and its owner (now the most recently served), or None."""
        if not self._waiting:
            return None
        owner = min(self._waiting, key=lambda o: self._last_turn.get(o, -1))
        items = self._waiting[owner]
        item = items.popleft()
        if not items:
            del self._waiting[owner]
        self._last_turn[owner] = next(self._turns)
        return owner, item

    def remove(self, owner: OwnerT, match: Callable[[ItemT], bool]) -> ItemT | None:
        """Take out the first waiting item of ``owner`` that ``match`` accepts."""
        items = self._waiting.get(owner)
        for item in items or ():
            if match(item):
                items.remove(item)  # type: ignore[union-attr]
                if not items:
                    del self._waiting[owner]
                return item
        return None

    def forget(self, owner: OwnerT) -> list[ItemT]:
        """Drop an owner that is gone; returns its items that were still waiting."""
        self._last_turn.pop(owner, None)
        return list(self._waiting.pop(owner, ()))

    def drain(self) -> list[tuple[OwnerT, ItemT]]:
        """Take out every waiting item, in the order they would have run."""
        drained = []
        while (entry := self.pop()) is not None:
            drained.append(entry)
        return drained

    def count(self, owner: OwnerT) -> int:
        return len(self._waiting.get(owner, ()))
