#!/usr/bin/env bash
# One GPU, the nineteenth session's lease (30 min of device time, the build ~6 of them); most
# wanted first (a call cut short brings back what is done; see bench/device_job.sh):
# 1. the CUDA build of patch 0004 as changed after its last GPU run, and the expert cache's GPU
#    tests (the prompt-logit test now with every row's logits and one mmap setting for all runs;
#    the GGML_SCHED_ASYNC_CPU_INPUTS tests);
# 2. the Qwen3-235B-A22B shape (20 layers) at 25% (never measured to the end) and 12.5%;
# 3. every GPU test;
# 4. the Qwen3-30B-A3B shape at 25%, two rounds, llama.cpp's blocking input copies against
#    ASYNC=1; then 12.5% with the eager policy beside thrifty;
# 5. bench/cpu_moe_decode.py (nine-point fit); 6. OMP_WAIT_POLICY=active, two rounds.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build cachetest
export STEPS=build TOKENS=256
# (the 235B model is written and removed before the 30B one: both would fill most of the disk)
REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS="0.25 0.125" MODES=sweep,dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
export KEEP_MODEL=1 VARIANTS=q30:realistic REPEATS=2
BUDGETS=0.25 MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
GGML_SCHED_ASYNC_CPU_INPUTS=1 TAG=async BUDGETS=0.25 MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
BUDGETS=0.125 MODES=sweep,dynamic,eager TAG=12 bash bench/jobs/expert-cache-policy-h200.sh
echo "=== CPU MoE decode, a layer and an expert, patch 0007 on and off ($(date +%T))"
python3 bench/cpu_moe_decode.py --threads 16 --dir /tmp > "$OUT/cpu-moe-decode.txt" 2>&1
grep -E "^\||Error|Traceback|speed model" "$OUT/cpu-moe-decode.txt"
OMP_WAIT_POLICY=active TAG=omp-active BUDGETS=0.25 MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
