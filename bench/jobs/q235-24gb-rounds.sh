#!/usr/bin/env bash
# H100 or H200 (one GPU), about 18 min held with the build: the 235B shape's report at 24 GB
# in two interleaved rounds (12 GB was done in the sixth session).
S=bench/gpu_session.sh
bash $S build model235
TUNE_MODEL=/tmp/moedesk-q235-20l.gguf BUDGETS=24 CTX=12288 DEPTH=8192 REPEATS=2 \
    STRATEGIES="classic n-cpu-moe advisor" TUNE_SECONDS=120 SWEEP=5 bash $S tune
