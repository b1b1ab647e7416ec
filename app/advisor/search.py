"""The search the planners share: the largest value a monotone test allows (the most layers,
experts or context that fit)."""

from __future__ import annotations

from collections.abc import Callable


def largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest value in [low, high] for which ``ok`` holds, ``ok`` being true up to some
    point and false after it; None when not even ``low`` is ok."""
    if not ok(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low
