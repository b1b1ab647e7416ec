"""Greedy decode of a GGUF with llama.cpp (through llama-cpp-python), the routed experts on the
CPU in the file's layout: ``python -m tests.moe_logits MODEL OUT.npy [--gpu] [--prompt N]
[--cache SLOTS] [--tokens N] [--no-mmap] [--every-row]`` saves the logits of the prompt and of
each decoded token (24 of them).

``--gpu`` puts the rest of the model on the GPU (llama.cpp's --cpu-moe); ``--prompt N`` decodes
a prompt of N tokens (from 32, a GPU computes its MoE layers, llama.cpp copying the experts its
tokens chose); ``--cache SLOTS`` keeps SLOTS experts of each layer in VRAM (a static expert
cache, patch 0004: every third expert, so that the experts copied from RAM come in many runs)
and writes how many experts the prompt took from there to OUT.npy's name with ``.from_vram``;
``--no-mmap`` loads the file into memory (on a GPU machine its pinned memory, where the cache's
copies run beside decoding); ``--every-row`` asks for every prompt token's logits (the last
one's are saved), so that the last layer keeps all of the prompt's rows: asked for the last
token's only, llama.cpp computes that layer's FFN for one row, which the cache splits between
GPU and CPU as it does a decoded token's. Run in a process of its own: the CPU backend reads its
environment (GGML_CPU_DISABLE_FUSION) once, at start."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import llama_cpp
import numpy as np

from app.engine import ggml_backend
from app.engine.expert_cache import HOST_PACKS_ENV
from app.engine.llama_params import context_params, model_params
from app.engine.placement import PlacementPlan
from app.gguf.info import read_model

PROMPT = [1, 50, 60, 70, 80, 90, 100, 110]
TOKENS = 24


def logits(model: Path, out: Path, *args: str, **env: str) -> np.ndarray:
    """This module's logits for ``model`` in a process of its own, with ``args`` and ``env``;
    its standard error goes to OUT.npy's name with ``.log``."""
    with open(f"{out}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "tests.moe_logits", str(model), str(out), *args], check=True,
                       env={**os.environ, **env}, cwd=Path(__file__).parent.parent, timeout=300, stderr=log)
    return np.load(out)


def main(model_path: str, out: str, gpu: bool, prompt_len: int, cache_slots: int, tokens: int,
         use_mmap: bool, every_row: bool) -> None:
    info = read_model(Path(model_path))
    where = {"experts_in_ram": "all", "split_mode": "none"} if gpu else {"n_gpu_layers": 0}
    # not repacked: the file's layout, as beside a GPU
    plan = PlacementPlan(n_ctx=256, n_threads=2, repack=False, use_mmap=use_mmap, **where)  # type: ignore[arg-type]
    llama_cpp.llama_backend_init()
    progress = llama_cpp.llama_progress_callback(lambda *_: True)
    params = model_params(plan, info.n_layer, info.architecture, progress)
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), params.params)
    ctx = llama_cpp.llama_init_from_model(model, context_params(plan))
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))

    def decode(tokens: list[int], pos0: int) -> np.ndarray:
        batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos0 + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, every_row or i == len(tokens) - 1
        assert llama_cpp.llama_decode(ctx, batch) == 0
        llama_cpp.llama_batch_free(batch)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()

    if cache_slots:
        # the packs in RAM where the engine would put them there (a CPU check of this script)
        allow_host = os.environ.get(HOST_PACKS_ENV) == "1"
        assert ggml_backend.cache_init(ctx, [cache_slots] * info.n_layer, allow_host) > 0, "no expert cache"
        for il in range(info.n_layer):
            assert ggml_backend.cache_set_experts(ctx, il, list(range(0, 3 * cache_slots, 3)))
    prompt = PROMPT if prompt_len == 0 else [1 + (7 * i) % 500 for i in range(prompt_len)]
    rows = [decode(prompt, 0)]
    for i in range(tokens):
        rows.append(decode([int(np.argmax(rows[-1]))], len(prompt) + i))
    np.save(out, np.array(rows))
    if cache_slots:
        stats = ggml_backend.cache_stats(ctx, info.n_layer, info.n_expert)
        Path(out + ".from_vram").write_text(str(stats.from_vram if stats else 0))
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--prompt", type=int, default=0)
    parser.add_argument("--cache", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--no-mmap", action="store_true")
    parser.add_argument("--every-row", action="store_true")
    a = parser.parse_args()
    main(a.model, a.out, a.gpu, a.prompt, a.cache, a.tokens, not a.no_mmap, a.every_row)
