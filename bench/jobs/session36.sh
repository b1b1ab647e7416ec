#!/usr/bin/env bash
# The thirty-sixth session's lease (one GPU, ~20 min with the build), most wanted first: what
# session35.sh asked, reordered so that issue 17's open target (the 30B shape at 25%: 1.5x
# n-cpu-moe) comes right after the build and the GPU tests of the changed patch 0004.
# 0. patch 0004 changed (a step's copies go to the largest score gains first): its GPU tests.
# 1. the 30B shape at 25%: eager capped at 40 copies a token (on the thirty-fourth host's probes
#    the advisor predicts 38 best), beside n-cpu-moe and thrifty, two rounds; then eager capped
#    at 24 and 56 and uncapped, one round each: how much of eager's hits does a cap keep, and
#    does it lose the link waits (1.7 ms a token uncapped on the thirty-fourth host)?
# 2. the 30B shape at 12.5%, short and at depth 8192: eager capped at 24 beside n-cpu-moe,
#    thrifty and uncapped eager (the thirty-third host measured 1.28x at depth).
# 3. the probe as changed in session 34 (an expert's cost beside its bytes) and the predictions
#    on the 30B shape with the new prompt (prefill copying the prompt's own experts).
# 4. the predictions on the 235B shape (20 layers), then its cache at 12.5% and 25%.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build cachetest
q30=/tmp/q30-realistic.gguf
export STEPS=build KEEP_MODEL=1 VARIANTS=q30:realistic
REPEATS=2 BUDGETS=0.25 MODES=sweep,dynamic,eager TOKENS=256 TAG=uploads40 \
    EXTRA="--no-mmap --uploads 40" bash bench/jobs/expert-cache-policy-h200.sh
for cap in 24 56 0; do
    REPEATS=1 BUDGETS=0.25 MODES=eager TOKENS=256 TAG=uploads$cap \
        EXTRA="--no-mmap --uploads $cap" bash bench/jobs/expert-cache-policy-h200.sh
done
REPEATS=1 BUDGETS=0.125 MODES=sweep,dynamic,eager TOKENS=256 TAG=uploads24 DEPTH=8192 \
    EXTRA="--no-mmap --uploads 24" bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 BUDGETS=0.125 MODES=eager TOKENS=256 TAG=uploads0 DEPTH=8192 \
    bash bench/jobs/expert-cache-policy-h200.sh
MODEL=$q30 bash bench/gpu_session.sh probecpu predict | grep -E "^(===|\||CPU kernels|llama.cpp's CPU|the prompt)"
rm -f "$q30"
unset KEEP_MODEL
q235=/tmp/q235-realistic.gguf
python3 -m app.synthetic "$q235" --preset qwen3-235b-a22b --layers 20 --routing realistic > /dev/null
sync
echo "=== predict q235 ($(date +%T))"
python3 bench/predict_vs_measure.py --model "$q235" --threads 16 --repeats 2 --placement gpu \
    --placement experts-ram --placement first-10 --placement first-15 2>&1 | tee "$OUT/predict-q235.txt" \
    | grep -E "^(\||note|the prompt)"
REPEATS=1 VARIANTS=q235:realistic BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager TOKENS=128 \
    bash bench/jobs/expert-cache-policy-h200.sh
