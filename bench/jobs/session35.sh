#!/usr/bin/env bash
# The next lease (one GPU, ~15 min after the build), most wanted first. Left by the thirty-fourth
# session, whose lease (H100) measured the 30B shape at both budgets with the mix, the 235B shape
# short and deep, uniform routing, the two-model kernel probe (67.8 GB/s; decode predictions
# -11..-18%, in range) and the kernel rate by type. Since then: the probe's third model (wider
# experts: a cost an expert has beside its bytes) and predict_vs_measure's varied prompt.
# 1. the build; the probe as changed (its line says the cost an expert has and the rate for 4x
#    larger experts); the predictions on the 30B shape (prefill with the new prompt: within 25%?
#    predict_vs_measure now counts the experts the prompt chose and predicts prefill copying those too);
# 2. the predictions on the 235B shape (20 layers): n-cpu-moe's decodes there read 20-27% above
#    the old rate's predictions;
# 3. the 235B shape at 12.5% and 25% short: the advisor picked eager at 12.5% (1.31x, thrifty
#    1.46x) with the probe's rate at the 30B shape's experts; at 25% eager's copies outlasted the
#    CPU's part of a token on the link (COPY_LINK_SHARE, fitted on that one host: out of sample
#    here; bench/expert_cache.py now prints the host-to-GPU copy probe the link is taken from).
# 0. patch 0004 changed (a step's copies go to the largest score gains first): its GPU tests.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build cachetest
q30=/tmp/q30-realistic.gguf
python3 -m app.synthetic "$q30" --preset qwen3-30b-a3b --routing realistic > /dev/null
sync  # the model's 17 GB written out before anything is timed
MODEL=$q30 bash bench/gpu_session.sh probecpu predict | grep -E "^(===|\||CPU kernels|llama.cpp's CPU|the prompt)"
rm -f "$q30"
q235=/tmp/q235-realistic.gguf
python3 -m app.synthetic "$q235" --preset qwen3-235b-a22b --layers 20 --routing realistic > /dev/null
sync
echo "=== predict q235 ($(date +%T))"
python3 bench/predict_vs_measure.py --model "$q235" --threads 16 --repeats 2 --placement gpu \
    --placement experts-ram --placement first-10 --placement first-15 2>&1 | tee "$OUT/predict-q235.txt" \
    | grep -E "^(\||note|the prompt)"
export STEPS=build TOKENS=128
REPEATS=1 KEEP_MODEL=1 VARIANTS=q235:realistic BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager \
    bash bench/jobs/expert-cache-policy-h200.sh
rm -f "$q235"
# 4. the 30B shape at 25%: eager with its copies capped at 40 a token (about half its 78; on the
#    thirty-fourth host's probes the advisor predicts 38 best, 1% over thrifty), beside
#    n-cpu-moe 36 and thrifty. Measured on the thirty-fourth's host, thrifty's 62% hits bound it
#    to 1.42x n-cpu-moe even with no cost of its own (1.40x measured); eager's 69% would allow
#    1.7x, but its copies kept the next layers' results waiting on the link (1.7 ms a token): does
#    a cap that fits the link keep most of the hits without the waits?
#    Then eager uncapped on the same host, the model kept from the run before.
REPEATS=1 KEEP_MODEL=1 VARIANTS=q30:realistic BUDGETS=0.25 MODES=sweep,dynamic,eager TOKENS=256 TAG=uploads40 \
    EXTRA="--no-mmap --uploads 40" bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 VARIANTS=q30:realistic BUDGETS=0.25 MODES=eager TOKENS=256 TAG=eager \
    bash bench/jobs/expert-cache-policy-h200.sh
