#!/usr/bin/env bash
# bench/jobs/session33.sh cut to what a short lease can hold (the thirty-third session spent
# 17 of its 30 device minutes on refused starts), most wanted first: the CUDA build; depth 8192
# on the 30B shape at 25% (issue 17's open target: 192 tokens, so the profile's later windows
# hold no prompt graph); the kernel probe and the predictions (issue 19); depth at 12.5%; then
# the rest of session33.sh (the 25% rounds, every GPU test, ...).
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build
q30=/tmp/q30-realistic.gguf
python3 -m app.synthetic "$q30" --preset qwen3-30b-a3b --routing realistic > /dev/null
sync  # the model's 17 GB written out before anything is timed
export STEPS=build TOKENS=256 KEEP_MODEL=1 VARIANTS=q30:realistic
REPEATS=1 SHORT=0 DEPTH=8192 DEPTH_TOKENS=192 BUDGETS=0.25 MODES=sweep,dynamic,eager \
    TAG=d25 bash bench/jobs/expert-cache-policy-h200.sh
MODEL=$q30 bash bench/gpu_session.sh probecpu predict | grep -E "^(===|\||CPU kernels|llama.cpp's CPU)"
REPEATS=1 SHORT=0 DEPTH=8192 DEPTH_TOKENS=192 BUDGETS=0.125 MODES=sweep,dynamic,eager \
    TAG=d12 bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=2 KEEP_MODEL= BUDGETS="0.25" MODES=sweep,dynamic,eager bash bench/jobs/expert-cache-policy-h200.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
