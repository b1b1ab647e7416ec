#!/usr/bin/env bash
# One GPU, about 14 min held (the seventeenth session's first lease, leaving time for a second):
# 1. the CUDA build and the GPU tests (patch 0004 now writes each device's maps once a step);
# 2. the Qwen3-30B-A3B shape with routing like Qwen3's at 12.5% and 25%: all experts in RAM
# (greedy output's reference), the best n-cpu-moe, thrifty, eager and "mix" (half the budget as
# whole layers, a dynamic cache on the rest), mmap off, profiled, with the advisor's prediction;
# 3. uniform routing on the same shape (issue 17's >= 0.98x).
MODES=ram,sweep,dynamic,eager,mix VARIANTS="q30:realistic" bash bench/jobs/expert-cache-policy-h200.sh
STEPS=build MODES=sweep,static,dynamic VARIANTS=q30:uniform bash bench/jobs/expert-cache-policy-h200.sh
