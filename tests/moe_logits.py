"""Greedy decode of a GGUF on the CPU with llama.cpp (through llama-cpp-python), the experts in
the file's layout: ``python -m tests.moe_logits MODEL OUT.npy`` saves the logits of the prompt
and of each decoded token. Run in a process of its own: the CPU backend reads its environment
(GGML_CPU_DISABLE_FUSION) once, at start."""

from __future__ import annotations

import sys

import llama_cpp
import numpy as np

PROMPT = [1, 50, 60, 70, 80, 90, 100, 110]
TOKENS = 24


def main(model_path: str, out: str) -> None:
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = 0
    mp.use_extra_bufts = False  # the file's layout, as beside a GPU: no repacked kernels
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), mp)
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_threads, cp.n_threads_batch = 256, 2, 2
    ctx = llama_cpp.llama_init_from_model(model, cp)
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
    main(sys.argv[1], sys.argv[2])
