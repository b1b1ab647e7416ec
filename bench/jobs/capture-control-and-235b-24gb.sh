#!/usr/bin/env bash
# H100, about 26 min held with the build (a machine goes back after 30 min held): the engine
# bench for both placements with the within-process capture figure and a second engine without
# telemetry (--control: how far two processes of the same code differ), then the 235B shape's
# report at 24 GB in two rounds.
S=bench/gpu_session.sh
bash $S build model model235
REPEATS=5 BENCH_TAG=control BENCH_ARGS=--control bash $S bench
TUNE_MODEL=/tmp/moedesk-q235-20l.gguf BUDGETS=24 CTX=12288 DEPTH=8192 REPEATS=2 \
    STRATEGIES="classic n-cpu-moe advisor" TUNE_SECONDS=120 SWEEP=5 bash $S tune
