#!/usr/bin/env bash
# One GPU, ~25 min held; most wanted first (a call cut short brings back what is done; see
# bench/device_job.sh). Left by the twentieth session for the next lease:
# 1. the CUDA build (patch 0004: paced copies and a CPU split's results queued, now on by
#    default; the =1 paths ran in the twentieth session; the switches read through one helper
#    and the twin loops made one since, in the session after, which had no device) and the
#    cache's GPU tests;
# 2. issue 19's kernel probe (moedesk-cli probe-cpu: llama.cpp's CPU kernels timed on routed
#    experts by decoding), then the advisor's predictions against the engine on the 30B shape,
#    with the probe's rate and from the RAM probe alone (bench/predict_vs_measure.py prints
#    both): does the measured rate follow this host where the numpy probe did not (the
#    twentieth session's predictions 33-48% under the measurement)?
# 3. issue 17 on the 30B shape at the new defaults, two rounds, thrifty and eager: a second
#    load for the 1.36x (12.5%) and 1.50x (25%) the twentieth session measured with both on;
# 4. depth 8192 at the new defaults (192 tokens: the profile's later windows hold no prompt
#    graph), the 30B shape (1.15x / 1.19x as built) and the 235B shape at both budgets;
# 5. every GPU test (the kernel probe's GPU test among them); 6. uniform routing; 7. kernel
#    rate by quant type (below).
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
# the host's cores and caches: are the 16 CPUs 16 cores or 8 with two threads each (the CPU
# compute of one graph varied by half between loads)?
{ lscpu; lscpu -e; numactl -H; } > "$OUT/lscpu.txt" 2>&1
bash bench/gpu_session.sh build cachetest
q30=/tmp/q30-realistic.gguf
python3 -m app.synthetic "$q30" --preset qwen3-30b-a3b --routing realistic > /dev/null
MODEL=$q30 bash bench/gpu_session.sh probecpu predict | grep -E "^(===|\||CPU kernels|llama.cpp's CPU)"
export STEPS=build TOKENS=256 KEEP_MODEL=1 VARIANTS=q30:realistic
REPEATS=2 BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 KEEP_MODEL= SHORT=0 DEPTH=8192 DEPTH_TOKENS=192 BUDGETS="0.25 0.125" MODES=sweep,dynamic,eager \
    TAG=d bash bench/jobs/expert-cache-policy-h200.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager DEPTH=8192 \
    DEPTH_TOKENS=192 bash bench/jobs/expert-cache-policy-h200.sh
# 6. uniform routing with the cache forced at 25% (0.88-0.94x in the eighteenth session, before
#    the queued copies took ~1-2 ms off each cached token; the target is 0.98x)
REPEATS=1 KEEP_MODEL= VARIANTS=q30:uniform BUDGETS=0.25 MODES=sweep,dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
# 7. (if time is left) issue 19: the CPU kernels' rate by quant type against Q4_0 on this host's
#    16 cores (the speed model's CPU_KERNEL_RATE was measured on the dev machine's 2)
echo "=== kernel rate by type ($(date +%T))"
python3 bench/kernel_rate_by_type.py --threads 16 --passes 1 --types Q4_K Q6_K Q2_K IQ2_XXS IQ1_M MXFP4 Q8_0 \
    2>&1 | grep -E "^(pass|\|)"
