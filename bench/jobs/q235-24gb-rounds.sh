#!/usr/bin/env bash
# H100, about 20 min held with the build (a machine goes back after 30 min held): the 235B
# shape's report at 24 GB in two interleaved rounds, then, if time is left, the engine bench's
# experts-in-RAM row with the capture and --control figures (the sixth session's was cut).
S=bench/gpu_session.sh
bash $S build model235
TUNE_MODEL=/tmp/moedesk-q235-20l.gguf BUDGETS=24 CTX=12288 DEPTH=8192 REPEATS=2 \
    STRATEGIES="classic n-cpu-moe advisor" TUNE_SECONDS=120 SWEEP=5 bash $S tune
bash $S model
REPEATS=5 PLACEMENTS=experts-ram BENCH_TAG=control BENCH_ARGS=--control bash $S bench
