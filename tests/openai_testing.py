"""Shared by the OpenAI server's tests: the real ``openai`` client for a running server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import LoadParams
from app.serve.http import OpenAIServer


def client_for(server: OpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="not-needed", max_retries=0)


def user(text: str) -> list[dict[str, Any]]:
    """A conversation of one user message, as the client sends it."""
    return [{"role": "user", "content": text}]


@contextmanager
def engine_with(model: Path, n_ctx: int, telemetry: bool = True) -> Iterator[EngineClient]:
    """A real engine process with ``model`` loaded at ``n_ctx`` tokens (2 threads)."""
    with EngineClient.spawn() as client:
        client.load(LoadParams(model=str(model), telemetry=telemetry,
                               placement=PlacementPlan(n_ctx=n_ctx, n_threads=2)))
        yield client


def model_name(engine: EngineClient) -> str:
    """The name the loaded model goes by (the id the server lists)."""
    name = engine.stats().model
    assert name is not None
    return name
