"""Engine patch 0007: a decoded token's MoE up and gate products and their SwiGLU run as one
pass of the CPU backend over experts in the file's layout (what a GPU machine runs for the
layers whose experts are in RAM). Its products are the same vec_dot calls as llama.cpp's three
ops, so every logit must be the same bit for bit with it and without it
(GGML_CPU_DISABLE_FUSION=1). tests/test_expert_cache.py checks it with the expert cache's
negative ids (hot selections), whose rows it zeroes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.moe_logits import logits


@pytest.mark.parametrize("fixture", ["tiny_moe_gguf", "realistic_moe_gguf"])
def test_the_fused_up_gate_pass_computes_what_the_three_ops_do(
        fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model: Path = request.getfixturevalue(fixture)
    fused = logits(model, tmp_path / "fused.npy")
    three_ops = logits(model, tmp_path / "three-ops.npy", GGML_CPU_DISABLE_FUSION="1")
    assert fused.shape == three_ops.shape and np.isfinite(fused).all()
    assert np.array_equal(fused, three_ops)


@pytest.mark.gpu
def test_beside_a_gpu_the_fused_pass_computes_what_the_three_ops_do(
        realistic_moe_gguf: Path, tmp_path: Path) -> None:
    # llama.cpp's --cpu-moe: the routed experts on the CPU (the fused pass), the rest on the GPU
    fused = logits(realistic_moe_gguf, tmp_path / "fused.npy", "--gpu")
    three_ops = logits(realistic_moe_gguf, tmp_path / "three-ops.npy", "--gpu", GGML_CPU_DISABLE_FUSION="1")
    assert np.isfinite(fused).all() and np.array_equal(fused, three_ops)
