"""What the GPU tests of the expert cache and the expert stream share: a model with real
Qwen3-30B-A3B layer shapes that routes like Qwen3, a load with every routed expert in RAM, and
a greedy answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.client import EngineClient
from app.engine.placement import PlacementPlan
from app.engine.protocol import ChatMessage, ChatParams, LoadParams, LoadResult, Sampling
from app.synthetic import SyntheticSpec, write_synthetic_model


@pytest.fixture(scope="module")
def realistic_q30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen3-30B-A3B's real layer shapes, 4 layers, routing like Qwen3's (about 2.2 GB)."""
    folder = tmp_path_factory.mktemp("q30r")
    (path,) = write_synthetic_model(folder / "q30-4l-realistic.gguf",
                                    SyntheticSpec.preset("qwen3-30b-a3b", n_layer=4, routing="realistic"))
    return path


def load(engine: EngineClient, model: Path, **plan: object) -> LoadResult:
    placement = PlacementPlan(**{"n_ctx": 1024, "split_mode": "none", "experts_in_ram": "all", **plan})  # type: ignore[arg-type]
    return engine.load(LoadParams(model=str(model), placement=placement))


def decode(engine: EngineClient, tokens: int = 48, prompt: str = "Route me through the experts") -> str:
    stream = engine.chat(ChatParams(
        messages=[ChatMessage(role="user", content=prompt)],
        sampling=Sampling(temperature=0.0, max_tokens=tokens, ignore_eos=True)))
    return "".join(token.text for token in stream)
