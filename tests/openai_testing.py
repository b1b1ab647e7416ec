"""Shared by the OpenAI server's tests: the real ``openai`` client for a running server."""

from __future__ import annotations

from typing import Any

import openai

from app.serve.http import OpenAIServer


def client_for(server: OpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="not-needed", max_retries=0)


def user(text: str) -> list[dict[str, Any]]:
    """A conversation of one user message, as the client sends it."""
    return [{"role": "user", "content": text}]
