#!/usr/bin/env bash
# One GPU, about 14 min held (for a session with ~15 min of device time left): the most owed
# first. 1. the CUDA build and the GPU tests (patch 0004 as changed in the fifteenth session:
# a per-layer copy bound, a copy stream per GPU), then the Qwen3-30B-A3B shape with realistic
# routing: static, thrifty and eager against the best n-cpu-moe at 12.5% and 25%, mmap off,
# with the cache's profile line (~10 min); 2. the host-to-GPU copy probe alone (~1 min: the
# figures issue 19's refit needs, beside the earlier sessions' prefill rows); 3. the
# Qwen3-235B-A22B shape (20 layers), the same modes (~4 min), if time is left.
VARIANTS=q30:realistic bash bench/jobs/expert-cache-policy-h200.sh
CASES=none bash bench/jobs/h2d-probe-h200.sh
STEPS=build VARIANTS=q235:realistic bash bench/jobs/expert-cache-policy-h200.sh
