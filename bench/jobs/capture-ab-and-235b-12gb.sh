#!/usr/bin/env bash
# One H100 session (about 26 min held with the build; see bench/device_job.sh): the GPU tests
# (single-GPU placement tests now pin one GPU), the engine against bare llama-cpp-python with
# the routing capture also measured within one process (bare's Llama, toggled between runs),
# then the 235B shape's report at 12 GB in two interleaved rounds (cut short by the session's
# device time, it keeps the rows measured: report.csv is rewritten after each run).
S=bench/gpu_session.sh
lscpu > "$OUT/lscpu.txt" 2>&1
bash $S build model model235 test
REPEATS=7 BENCH_TAG=t16 bash $S bench
TUNE_MODEL=/tmp/moedesk-q235-20l.gguf BUDGETS=12 CTX=12288 DEPTH=8192 REPEATS=2 \
    STRATEGIES="classic n-cpu-moe advisor" TUNE_SECONDS=120 SWEEP=5 bash $S tune
