#!/usr/bin/env bash
# nvidia-h200 (one GPU, 16 cores), about 23 min held with the build: the engine bench with the
# routing capture measured within one process and a second engine without telemetry
# (--control), both placements (the H200's +3.6-6.0% telemetry was two processes only), then
# the Qwen3-30B shape's report at 12 GB in two interleaved rounds, n-cpu-moe among the rows.
S=bench/gpu_session.sh
lscpu > "$OUT/lscpu.txt" 2>&1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
bash $S build model
REPEATS=5 BENCH_TAG=control BENCH_ARGS=--control bash $S bench
BUDGETS=12 CTX=32768 DEPTH=16384 REPEATS=2 STRATEGIES="classic n-cpu-moe advisor" \
    TUNE_SECONDS=120 SWEEP=6 bash $S tune
