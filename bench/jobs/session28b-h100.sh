#!/usr/bin/env bash
# One GPU, the nineteenth session's second lease (~770 s of device time: the build, then ~7 min):
# issue 17's depth target on the Qwen3-235B-A22B shape (20 layers): a second short-prompt round
# at 25% and 12.5%, then decode after an 8192-token prompt with the same placements.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build
STEPS=build TOKENS=256 REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS="0.25 0.125" \
    MODES=sweep,dynamic DEPTH=8192 bash bench/jobs/expert-cache-policy-h200.sh
