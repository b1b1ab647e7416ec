#!/usr/bin/env bash
# One GPU, ~32 min held if it all runs (more than a session has: the last steps may not run);
# most wanted first (a call cut short brings back what is done; see bench/device_job.sh). Left
# by the nineteenth session for the next lease:
# 1. the CUDA build (patch 0004: a CPU split's inputs queued by default; new and off by default:
#    paced copies, a CPU split's results queued) and the cache's GPU tests (the queued copies'
#    logits against llama.cpp's blocking ones; paced copies against copies issued at once);
# 2. paced copies (LLAMA_MOE_CACHE_PACED_UPLOADS=1) against copies issued at once, the
#    Qwen3-30B-A3B shape at 12.5% and 25%, thrifty and eager, two rounds each: does eager's
#    3.0-3.3 ms of device-side copies a token fall to thrifty's 0.8-0.9, and issue 17's 1.3x and
#    1.5x come within reach there (1.29x and 1.23-1.45x in the nineteenth session)?
#    Then the same with a CPU split's results queued too (GGML_SCHED_ASYNC_DEVICE_INPUTS=1).
# 3. issue 17's depth 8192 where it never ran: the 30B shape at both budgets, the
#    Qwen3-235B-A22B shape (20 layers) at 12.5% (at 25%: 1.61x);
# 4. every GPU test; then the queued results (2.) and 5. OpenMP's threads bound to cores (OMP_PROC_BIND, OMP_PLACES: no cost
#    while idle, unlike active waiting; might narrow the host's spread: n-cpu-moe's CPU compute
#    varied by half between loads) and a bounded spin (GOMP_SPINCOUNT), two rounds each at 25%.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build cachetest
export STEPS=build TOKENS=256 KEEP_MODEL=1 VARIANTS=q30:realistic
REPEATS=2 BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=2 BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager LLAMA_MOE_CACHE_PACED_UPLOADS=1 TAG=paced \
    bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 KEEP_MODEL= BUDGETS="0.25 0.125" MODES=sweep,dynamic DEPTH=8192 TAG=d \
    bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS=0.125 MODES=sweep,dynamic DEPTH=8192 \
    bash bench/jobs/expert-cache-policy-h200.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
# a CPU split's results queued on the GPU's stream (GGML_SCHED_ASYNC_DEVICE_INPUTS=1), with the
# paced copies: the device splits' input copies were 0.96-1.19 ms a cached token
REPEATS=2 BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager LLAMA_MOE_CACHE_PACED_UPLOADS=1 \
    GGML_SCHED_ASYNC_DEVICE_INPUTS=1 TAG=paced-results bash bench/jobs/expert-cache-policy-h200.sh
export KEEP_MODEL=1 REPEATS=2 BUDGETS=0.25 MODES=sweep,dynamic
OMP_PROC_BIND=close OMP_PLACES=cores TAG=bind bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= GOMP_SPINCOUNT=10000000 TAG=spin bash bench/jobs/expert-cache-policy-h200.sh
