#!/usr/bin/env bash
# One device session (about 27 min with the build; see bench/device_job.sh): where the engine's
# time to first token goes now that tokens skip the event loop, at 16 threads and at 15 (a core
# left for the engine's and the client's threads); the GPU tests; then the 235B shape's report
# at 12 GB in two interleaved rounds, autotune confirming its wins (cut short by the session's
# device time, it keeps the rows measured: report.csv is rewritten after each run).
S=bench/gpu_session.sh
lscpu > "$OUT/lscpu.txt" 2>&1
bash $S build model test
REPEATS=7 BENCH_TAG=t16 bash $S bench
REPEATS=7 THREADS=15 BENCH_TAG=t15 bash $S bench
bash $S model235
TUNE_MODEL=/tmp/moedesk-q235-20l.gguf BUDGETS=12 CTX=12288 DEPTH=8192 REPEATS=2 \
    STRATEGIES="classic n-cpu-moe advisor" TUNE_SECONDS=120 SWEEP=5 bash $S tune
