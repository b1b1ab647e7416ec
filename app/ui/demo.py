"""What the pages' demos (``demo_page()`` of each page package, for screenshots and a look by
hand) share: an app state on a recorded desktop, a Qwen3-30B-A3B loaded in it, and an
EngineController that is never started but says the engine is ready."""

from __future__ import annotations

from PySide6.QtCore import QObject

from app.engine.protocol import LoadParams, LoadResult, ModelInfo, TensorClassPlacement
from app.hardware.model import Cpu, Gpu, Hardware, Memory
from app.ui.app_state import AppState, LoadedModel
from app.ui.engine_controller import EngineController
from app.ui.engine_state import EngineState

GIB = 2**30


def demo_hardware() -> Hardware:
    """A desktop: Ryzen 9 7950X, 64 GiB of RAM, an RTX 4090 (24 GiB)."""
    return Hardware(
        cpu=Cpu("AMD Ryzen 9 7950X", "x86_64", 16, 32, ("avx2", "avx512f")),
        memory=Memory(total=64 * GIB, available=58 * GIB, swap_total=8 * GIB),
        numa_nodes=[],
        gpus=[Gpu("nvidia", "NVIDIA GeForce RTX 4090", 24 * GIB, 23 * GIB, compute_capability=(8, 9))],
    )


def demo_loaded() -> LoadedModel:
    """Qwen3-30B-A3B (Q4_K_M) as the engine reports it loaded, experts of 20 layers in RAM."""
    model = ModelInfo(path="Qwen3-30B-A3B-Q4_K_M.gguf", shards=["Qwen3-30B-A3B-Q4_K_M.gguf"],
                      architecture="qwen3moe", name="Qwen3-30B-A3B", n_layer=48, n_expert=128,
                      n_expert_used=8, n_ctx_train=40960, n_params=30_500_000_000,
                      size_bytes=18_600_000_000, chat_template=True)
    placement = [TensorClassPlacement("routed_experts", "CUDA0", 9_900_000_000, 84),
                 TensorClassPlacement("routed_experts", "CPU", 7_100_000_000, 60),
                 TensorClassPlacement("attention", "CUDA0", 1_050_000_000, 192),
                 TensorClassPlacement("embeddings", "CUDA0", 330_000_000, 2)]
    result = LoadResult(model=model, placement=placement, expert_layers_on_gpu=list(range(20, 48)),
                        n_ctx=8192, load_seconds=4.2, telemetry=True)
    return LoadedModel(result, LoadParams(model=model.path))


def demo_parts(parent: QObject | None = None, loaded: bool = True) -> tuple[AppState, EngineController]:
    """An app state on the demo desktop (with the demo model loaded unless ``loaded`` is False)
    and a controller that reports the engine ready; no engine process is started."""
    state = AppState(parent)
    state.set_hardware(demo_hardware())
    engine = EngineController(parent)
    engine.on_state(EngineState.IDLE)
    if loaded:
        state.set_loaded(demo_loaded())
    return state, engine
