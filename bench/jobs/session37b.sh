#!/usr/bin/env bash
# The thirty-seventh session's second job, on the same host as session37.sh (its CPU slower than
# the thirty-sixth's first host: kernel probe 58.9 GB/s): the 30B shape at 25% on a short prompt
# (the target missed on three of four hosts) and at 12.5% after 8192 tokens, 192 decoded.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
[ "${UNIFORM:-0}" = 1 ] || REPEATS=2 STEPS=build VARIANTS=q30:realistic BUDGETS=0.25 MODES=sweep,dynamic,eager SHORT=1 DEPTH= \
    TAG=uploads40 EXTRA="--no-mmap --uploads 40" bash bench/jobs/expert-cache-policy-h200.sh
[ "${UNIFORM:-0}" = 1 ] || REPEATS=1 STEPS=build VARIANTS=q30:realistic BUDGETS=0.125 MODES=sweep,dynamic,eager SHORT=0 DEPTH=8192 \
    DEPTH_TOKENS=192 TAG=uploads24 EXTRA="--no-mmap --uploads 24" bash bench/jobs/expert-cache-policy-h200.sh
# (a second call, with the lease's time left) uniform routing at both budgets: the 0.98x target
[ "${UNIFORM:-0}" = 1 ] || exit 0
REPEATS=1 STEPS=build VARIANTS=q30:uniform BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager SHORT=1 DEPTH= \
    TAG=uploads40 EXTRA="--no-mmap --uploads 40" bash bench/jobs/expert-cache-policy-h200.sh
