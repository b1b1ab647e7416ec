#!/usr/bin/env bash
# One session on nvidia-h200-x2 (about 15 min with the build; see bench/device_job.sh): the GPU
# tests with two GPUs (the split-model tests skip on one), then the engine against bare
# llama-cpp-python on one of its GPUs, now that every token is an event when it is sampled
# (the first event came one decode step late when the first token made no text of its own):
# 16 threads as on the H100, then all 32 cores with everything on the GPU.
S=bench/gpu_session.sh
lscpu > "$OUT/lscpu.txt" 2>&1
{ nvidia-smi; nvidia-smi topo -m; } > "$OUT/nvidia-smi.txt" 2>&1
bash $S build model test
export CUDA_VISIBLE_DEVICES=0
REPEATS=7 BENCH_TAG=t16 bash $S bench
REPEATS=7 THREADS=32 PLACEMENTS=gpu BENCH_TAG=t32 bash $S bench
