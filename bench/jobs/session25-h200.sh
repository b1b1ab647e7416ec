#!/usr/bin/env bash
# One GPU, about 21 min held: what the sixteenth session's short lease left. 1. the CUDA build
# and the GPU tests (patch 0004 now writes each device's maps once a step: 1.0-1.9 ms a token
# of three synchronous copies per changed layer before), then the Qwen3-30B-A3B and
# Qwen3-235B-A22B (20 layers) shapes with routing like Qwen3's at 12.5% and 25%: all experts in
# RAM (the reference for greedy output), the best n-cpu-moe, static, thrifty, eager, and "mix"
# (half the budget as whole layers, a dynamic cache on the rest: fewer CPU layers, each ~72 us
# fixed on the H100 host), mmap off, with the cache's profile line and the advisor's decode
# prediction beside each row (~17 min); 2. uniform routing on the 30B shape (issue 17's
# >= 0.98x; ~4 min). With less device time: VARIANTS and MODES in the first line trim it.
MODES=ram,sweep,static,dynamic,eager,mix VARIANTS="q30:realistic q235:realistic" \
    bash bench/jobs/expert-cache-policy-h200.sh
STEPS=build MODES=sweep,static,dynamic VARIANTS=q30:uniform bash bench/jobs/expert-cache-policy-h200.sh
