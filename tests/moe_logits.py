"""Greedy decode of a GGUF with llama.cpp (through llama-cpp-python), the routed experts on the
CPU in the file's layout: ``python -m tests.moe_logits MODEL OUT.npy [--gpu]`` saves the logits
of the prompt and of each decoded token; ``--gpu`` puts the rest of the model on the GPU
(llama.cpp's --cpu-moe). Run in a process of its own: the CPU backend reads its environment
(GGML_CPU_DISABLE_FUSION) once, at start."""

from __future__ import annotations

import sys
from pathlib import Path

import llama_cpp
import numpy as np

from app.engine.llama_params import context_params, model_params
from app.engine.placement import PlacementPlan
from app.gguf.info import read_model

PROMPT = [1, 50, 60, 70, 80, 90, 100, 110]
TOKENS = 24


def main(model_path: str, out: str, gpu: bool) -> None:
    info = read_model(Path(model_path))
    where = {"experts_in_ram": "all", "split_mode": "none"} if gpu else {"n_gpu_layers": 0}
    # not repacked: the file's layout, as beside a GPU
    plan = PlacementPlan(n_ctx=256, n_threads=2, repack=False, **where)  # type: ignore[arg-type]
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
            batch.seq_id[i][0], batch.logits[i] = 0, i == len(tokens) - 1
        assert llama_cpp.llama_decode(ctx, batch) == 0
        llama_cpp.llama_batch_free(batch)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()

    logits = [decode(PROMPT, 0)]
    for i in range(TOKENS):
        logits.append(decode([int(np.argmax(logits[-1]))], len(PROMPT) + i))
    np.save(out, np.array(logits))
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--gpu" in sys.argv[3:])
