#!/usr/bin/env bash
# nvidia-h200 (one GPU, 16 cores), about 14 min held with the build: the GPU tests (new: pinned
# host buffers counted as CPU memory, asked of ggml since the AMX fix), then the engine bench with a
# control engine, now also printing decode as timed inside (llama.cpp's eval timer for bare
# and bare+capture), to tell whether the +4.7% of capture toggled in bare's Llama (H200,
# seventh session) is the patch's sync inside llama_decode or scatter of the Python loop.
S=bench/gpu_session.sh
lscpu > "$OUT/lscpu.txt" 2>&1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
bash $S build model test
REPEATS=5 BENCH_TAG=inside BENCH_ARGS=--control bash $S bench
