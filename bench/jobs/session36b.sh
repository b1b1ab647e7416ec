#!/usr/bin/env bash
# The thirty-sixth session's second lease (~11 min with the build): where the 30B shape's
# time goes with the cache. Capped eager at 25% bought 66-68% hits but only 1.36x n-cpu-moe
# (session36.sh), so: 1. the cache's fixed cost, with every expert in VRAM (budget 1.0: a
# static cache of all 128 experts a layer, no CPU compute left, against all on the GPU), and
# at 0.5; 2. the 30B shape at 25% at depth 8192 (eager capped at 40 beside thrifty and
# n-cpu-moe); 3. uniform routing at 25% with the same placements.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
export STEPS=build TOKENS=256 REPEATS=1 KEEP_MODEL=1
VARIANTS=q30:realistic BUDGETS="1.0 0.5" MODES=sweep,static,dynamic,eager \
    bash bench/jobs/expert-cache-policy-h200.sh
VARIANTS=q30:realistic BUDGETS=0.25 MODES=sweep,dynamic,eager SHORT=0 DEPTH=8192 TAG=uploads40 \
    EXTRA="--no-mmap --uploads 40" bash bench/jobs/expert-cache-policy-h200.sh
rm -f /tmp/q30-realistic.gguf
unset KEEP_MODEL
VARIANTS=q30:uniform BUDGETS=0.25 MODES=sweep,dynamic,eager TAG=uploads40 \
    EXTRA="--no-mmap --uploads 40" bash bench/jobs/expert-cache-policy-h200.sh
