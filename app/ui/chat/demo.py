"""A Chat page filled with a realistic conversation, for screenshots (app.ui.screenshots)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtWidgets import QWidget

from app.store import ChatDefaults, MessageStats, Store

DEMO_ANSWER = """<think>
The user asks why a MoE model runs fast with experts in RAM. Key point: only the top-k experts
are read per token, so the bytes touched per token are a small share of the model.
</think>

A Mixture-of-Experts layer holds many **expert** feed-forward blocks, but the router sends each
token to only a few of them (8 of 128 for Qwen3-30B-A3B). So per token the engine reads:

- attention, norms and shared weights: small, kept on the **GPU**;
- the *chosen* routed experts: about 3 B of the 30 B parameters, read from **RAM**.

The same idea with llama.cpp directly:

```bash
llama-server -m Qwen3-30B-A3B-Q4_K_M.gguf -ngl 99 --cpu-moe
```

MoE Desk does this for you from the advisor's plan."""


def fill_demo_store(store: Store) -> None:
    """Two conversations, one with a reasoning answer that has Markdown, code and stats."""
    store.create_conversation("Draft a release note", ChatDefaults())
    conv = store.create_conversation("Why are MoE models fast?", ChatDefaults(preset="precise"))
    store.add_message(conv.id, "user", "Why can a 30B MoE model run fast when its experts sit in RAM?")
    answer = store.add_message(conv.id, "assistant", "", state="partial")
    store.update_message(answer.id, DEMO_ANSWER, "complete", MessageStats(
        prompt_tokens=41, completion_tokens=187, prefill_tps=412.0, decode_tps=38.6, ttft_s=0.11,
        finish_reason="stop", model="Qwen3-30B-A3B Q4_K_M"))


def demo_page(loaded: bool = True) -> QWidget:
    """The page on a conversation with a reasoning answer, a Qwen3-30B-A3B loaded
    (``loaded=False``: none, and no conversations either: the page's empty state)."""
    from app.ui.chat.page import ChatPage
    from app.ui.demo import demo_parts

    folder = Path(tempfile.mkdtemp(prefix="moedesk-demo-"))
    store = Store(folder / "demo.sqlite3")
    if loaded:
        fill_demo_store(store)
    state, engine = demo_parts(loaded=loaded)
    page = ChatPage(store, state, engine)
    state.setParent(page)
    engine.setParent(page)
    if loaded:
        page.open_conversation(store.conversations()[0].id)
        page.compose.setPlainText("And what does the advisor's slider change?")
    return page
