"""Counts in words for the UI's lines: "1 token", "300 tokens"."""

from __future__ import annotations


def count_text(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
