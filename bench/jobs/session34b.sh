#!/usr/bin/env bash
# The same lease's second job (H100, ~8 min): the 235B shape, which session34.sh lost when the
# tree was copied again under the running job (device_job.sh now runs jobs from a copy).
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
export STEPS=build TOKENS=128
REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager DEPTH=8192 \
    DEPTH_TOKENS=192 bash bench/jobs/expert-cache-policy-h200.sh
