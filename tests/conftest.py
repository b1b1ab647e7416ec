"""Shared fixtures: real parts (synthetic models written to disk), never mocks of llama.cpp."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from app.engine.client import EngineClient  # noqa: E402
from app.synthetic import SyntheticSpec, write_synthetic_model  # noqa: E402

# Property-based tests (Hypothesis) of hostile input: the same examples on every run and every
# machine (derandomized, no example database), a few seconds each; a test may lower
# max_examples further. A slow shared CI machine must not turn them into flakes: no deadline.
settings.register_profile("moedesk", derandomize=True, database=None, deadline=None,
                          max_examples=60, print_blob=False,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("moedesk")


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineClient]:
    """A real engine process, shared by the tests of one module."""
    with EngineClient.spawn() as client:
        yield client


@pytest.fixture(scope="session")
def tiny_moe_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny qwen3moe model (4 layers, 8 experts, top-2, Q4_0) that loads in milliseconds."""
    folder = tmp_path_factory.mktemp("tiny_moe")
    (path,) = write_synthetic_model(folder / "tiny-moe.gguf", SyntheticSpec.preset("tiny"))
    return path


@pytest.fixture(scope="session")
def split_moe_gguf(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny model as 3 shards (llama.cpp split format); load it by the first path."""
    folder = tmp_path_factory.mktemp("split_moe")
    spec = SyntheticSpec.preset("tiny", split=3)
    return write_synthetic_model(folder / "tiny-moe.gguf", spec)


@pytest.fixture(scope="session")
def skewed_moe_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with strong routing skew: per layer, two hot experts (listed in the
    file's ``moedesk.synthetic.hot_experts`` key) take most of the selections."""
    folder = tmp_path_factory.mktemp("skewed_moe")
    spec = SyntheticSpec.preset("tiny", routing_skew=1.0)
    (path,) = write_synthetic_model(folder / "tiny-moe-skewed.gguf", spec)
    return path


@pytest.fixture(scope="session")
def realistic_moe_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny-realistic preset: Qwen3's routing shape (128 experts, top-8) at small widths,
    routing like Qwen3 (skewed per layer, local from token to token while decoding; see
    app/synthetic/routing.py). Decodes about 50 tokens/s on 2 cores."""
    folder = tmp_path_factory.mktemp("realistic_moe")
    spec = SyntheticSpec.preset("tiny-realistic")
    (path,) = write_synthetic_model(folder / "tiny-realistic.gguf", spec)
    return path


def _gpu_devices() -> list[str]:
    from app.engine import ggml_backend

    return [d.name for d in ggml_backend.devices() if d.kind == "gpu"]


def pytest_report_header(config: pytest.Config) -> str:
    gpus = _gpu_devices()
    return f"GPU devices in this llama.cpp build: {', '.join(gpus) if gpus else 'none'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests need a GPU build and a GPU; elsewhere they are deselected, and the header
    says so. They run on the accelerator machine (bench/gpu_session.sh test)."""
    if _gpu_devices():
        return
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items:
        config.hook.pytest_deselected(items=gpu_items)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
