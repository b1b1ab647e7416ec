#!/usr/bin/env bash
# One device session (about 27 min; see bench/device_job.sh): where the engine's time to first
# token goes, at 16 threads and at 15 (a core left for the engine's and the client's threads),
# the GPU tests, then the 235B shape's report at 12 GB in two interleaved rounds.
S=bench/gpu_session.sh
lscpu > "$OUT/lscpu.txt" 2>&1
bash $S build model test
BENCH_TAG=t16 bash $S bench
THREADS=15 BENCH_TAG=t15 bash $S bench
bash $S model235
TUNE_MODEL=/tmp/moedesk-q235-20l.gguf BUDGETS=12 CTX=12288 DEPTH=8192 REPEATS=2 \
    STRATEGIES="classic n-cpu-moe advisor" TUNE_SECONDS=60 SWEEP=5 bash $S tune
