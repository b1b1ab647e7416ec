#!/usr/bin/env bash
# The thirty-second session's lease (22 min left after three starts refused): session30-h100.sh's
# steps, reordered so that what closes issues 17 and 19 comes first: the CUDA build and the
# cache's GPU tests, every GPU test, the kernel probe and predictions, the kernel rate by type
# on this host (two-layer models, short), the 30B shape at the new defaults (two loads); then
# depth, the 235B shape, uniform routing.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
# the host's cores and caches: are the 16 CPUs 16 cores or 8 with two threads each (the CPU
# compute of one graph varied by half between loads)?
{ lscpu; lscpu -e; numactl -H; } > "$OUT/lscpu.txt" 2>&1
bash bench/gpu_session.sh build cachetest
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
q30=/tmp/q30-realistic.gguf
python3 -m app.synthetic "$q30" --preset qwen3-30b-a3b --routing realistic > /dev/null
MODEL=$q30 bash bench/gpu_session.sh probecpu predict | grep -E "^(===|\||CPU kernels|llama.cpp's CPU)"
# issue 19: the CPU kernels' rate by quant type against Q4_0 on this host's
#    16 cores (the speed model's CPU_KERNEL_RATE was measured on the dev machine's 2)
echo "=== kernel rate by type ($(date +%T))"
python3 bench/kernel_rate_by_type.py --threads 16 --passes 1 --types Q4_K Q6_K Q2_K IQ2_XXS IQ1_M MXFP4 Q8_0 \
    2>&1 | grep -E "^(pass|\|)"
export STEPS=build TOKENS=256 KEEP_MODEL=1 VARIANTS=q30:realistic
REPEATS=2 BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 KEEP_MODEL= SHORT=0 DEPTH=8192 DEPTH_TOKENS=192 BUDGETS="0.25 0.125" MODES=sweep,dynamic,eager \
    TAG=d bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager DEPTH=8192 \
    DEPTH_TOKENS=192 bash bench/jobs/expert-cache-policy-h200.sh
# 6. uniform routing with the cache forced at 25% (0.88-0.94x in the eighteenth session, before
#    the queued copies took ~1-2 ms off each cached token; the target is 0.98x)
REPEATS=1 KEEP_MODEL= VARIANTS=q30:uniform BUDGETS=0.25 MODES=sweep,dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
