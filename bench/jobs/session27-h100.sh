#!/usr/bin/env bash
# One GPU, about 30 min held if it all runs (more than a session's device time: the last steps
# may not run); most wanted first (a call cut short brings back
# what is done; see bench/device_job.sh). Left by the eighteenth session for the next lease:
# 1. the CUDA build; 2. the expert cache's GPU tests: the prompt-logit test (now loading all
#    four runs alike: which of the cache's presence, its experts from VRAM or the batched copy
#    changed the prompt's logits on the H100?) and the new GGML_SCHED_ASYNC_CPU_INPUTS tests;
# 3. the Qwen3-30B-A3B shape at 25%, two interleaved rounds, with llama.cpp's blocking copies of
#    a CPU split's inputs and then with them queued on the GPU's stream (ASYNC=1), profiled;
# 4. 12.5% with the eager policy beside thrifty (issue 17's 1.3x there), two rounds;
# 5. the Qwen3-235B-A22B shape (20 layers) at 12.5% and 25% (25% never measured);
# 6. every GPU test; 7. bench/cpu_moe_decode.py (now a nine-point fit); 8. OMP_WAIT_POLICY=active
#    again (two rounds) and a bounded OpenMP spin (GOMP_SPINCOUNT), n-cpu-moe and the cache at 25%.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build cachetest
# 256 tokens a run: the 128 of before counted the dynamic cache's first tokens after the prompt
# (the eighteenth session's t/s ran 3-10% under the scheduler's steady-state graph times)
export STEPS=build KEEP_MODEL=1 VARIANTS=q30:realistic REPEATS=2 TOKENS=256
BUDGETS=0.25 MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
GGML_SCHED_ASYNC_CPU_INPUTS=1 TAG=async BUDGETS=0.25 MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
# (the 30B model goes before the 235B one is written: both would fill most of the 64 GB disk)
KEEP_MODEL= BUDGETS=0.125 MODES=sweep,dynamic,eager TAG=12 bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS="0.125 0.25" MODES=sweep,dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
echo "=== CPU MoE decode, a layer and an expert, patch 0007 on and off ($(date +%T))"
python3 bench/cpu_moe_decode.py --threads 16 --dir /tmp > "$OUT/cpu-moe-decode.txt" 2>&1
grep -E "^\||Error|Traceback|speed model" "$OUT/cpu-moe-decode.txt"
# OpenMP's waiting: lease 2 of the eighteenth session measured n-cpu-moe at 51.4 t/s with
# OMP_WAIT_POLICY=active against 41.6-47.6 in five loads without (one load: noise or not?);
# libgomp's default spin (300,000 pauses) should already cover a token's gaps, so two rounds
# of it again, then a bounded spin that would not burn the cores while the engine is idle
OMP_WAIT_POLICY=active TAG=omp-active BUDGETS=0.25 MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 KEEP_MODEL= GOMP_SPINCOUNT=10000000 TAG=spin BUDGETS=0.25 MODES=sweep,dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
