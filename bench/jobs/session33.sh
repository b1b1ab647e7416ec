#!/usr/bin/env bash
# The next lease (one GPU, ~25 min), most wanted first (a call cut short brings back what is
# done; see bench/device_job.sh). Left by the thirty-second session, whose lease (H200, 10 min
# after five refused starts) ran the build, the cache's GPU tests (12 passed), the kernel probe
# and predictions, the kernel rate by type (one pass) and the 30B shape at 12.5% (two rounds):
# 1. the CUDA build; 2. the kernel probe (now waiting for pending
#    writes) and the predictions; 3. depth 8192 on the 30B shape (192 tokens: the profile's later
#    windows hold no prompt graph), the open question of issue 17's targets;
# 4. the 30B shape at 25% at the new defaults, two rounds (the thirty-second's cut before it);
#    then every GPU test (the thirty-second's collected none: a GPU test file imported pytest-qt
#    through a helper; fixed, and guarded by tests/test_gpu_tests_import_bare.py);
# 5. whether pending disk writes slow the kernel probe (30 GB/s right after a 17 GB model was
#    written, 40 and 56 after; one pass: four probes); 6. the 235B shape short and deep;
# 7. uniform routing; 8. the kernel rate by type, 3 passes.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build  # the cache's GPU tests run with every GPU test below (the patches as the thirty-second's lease tested them)
q30=/tmp/q30-realistic.gguf
python3 -m app.synthetic "$q30" --preset qwen3-30b-a3b --routing realistic > /dev/null
sync  # the model's 17 GB written out before anything is timed
MODEL=$q30 bash bench/gpu_session.sh probecpu predict | grep -E "^(===|\||CPU kernels|llama.cpp's CPU)"
export STEPS=build TOKENS=256 KEEP_MODEL=1 VARIANTS=q30:realistic
REPEATS=1 SHORT=0 DEPTH=8192 DEPTH_TOKENS=192 BUDGETS="0.25 0.125" MODES=sweep,dynamic,eager \
    TAG=d bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=2 KEEP_MODEL= BUDGETS="0.25" MODES=sweep,dynamic,eager bash bench/jobs/expert-cache-policy-h200.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
echo "=== probe after writes ($(date +%T))"
python3 bench/probe_after_writes.py --threads 16 --write-gb 16 --passes 1 2>&1 | grep "^pass" | tee "$OUT/probe-writes.txt"
REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager DEPTH=8192 \
    DEPTH_TOKENS=192 bash bench/jobs/expert-cache-policy-h200.sh
# uniform routing with the cache forced at 25% (0.88-0.94x in the eighteenth session; target 0.98x)
REPEATS=1 KEEP_MODEL= VARIANTS=q30:uniform BUDGETS=0.25 MODES=sweep,dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
echo "=== kernel rate by type ($(date +%T))"
python3 bench/kernel_rate_by_type.py --threads 16 --passes 3 --types Q4_K Q6_K Q2_K IQ2_XXS IQ1_M MXFP4 Q8_0 \
    2>&1 | grep -E "^(pass|\|)"
