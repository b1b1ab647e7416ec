#!/usr/bin/env bash
# nvidia-h200 or nvidia-h100-x1 (one GPU), about 12 min after the build (estimated: 20 loads of
# 7-19 GB models, 4 synthetic writes): the host-to-GPU copy probe (app/hardware/h2d.py) beside
# the prefill runs it should predict (issue 19: copies from an mmapped model were predicted
# 34-45% too fast on the H100 host from the RAM probe's numpy copy).
# 1. the probe as the app runs it, three times (its spread and its seconds), a sweep of copy
#    sizes with the mapped file on the models' drive (/tmp), the RAM probe's numpy copy it
#    replaces (bench/h2d_probe.py), and `moedesk-cli hardware`'s line (the figures the
#    predictions below use: cached in MOEDESK_HOME);
# 2. the prefill rows of families-fit-check-h200.sh whose experts are copied (experts in RAM,
#    the first N layers' in RAM), from the mapped file (pageable copies) and without mmap
#    (pinned copies), and each model all on the GPU (the compute the copies add to); two
#    repeats each, 32 tokens after a ~480-token prompt, 16 threads; Kimi-K2's 4 layers too,
#    whose two H200 rows copied at 9.5 and 14.0 GB/s;
# 3. the probe again after the runs (drift with the host's state).
# Refit: each table row becomes a row of tests/data/prefill_<h100|h200>.csv (session, preset,
# layers, placement, use_mmap, n_prompt, prefill_tps, decode_tps, the RAM probe's columns from
# predict_vs_measure's "RAM probe:" line, and h2d_pageable,h2d_mapped,h2d_pinned from
# h2d_probe's "csv columns" line); then `python bench/copy_rate_fit.py` prints each run's
# copy rate against each figure: set MAPPED_COPY_EFFICIENCY / PINNED_COPY_EFFICIENCY
# (app/advisor/device_rates.py) around its geometric mean and drop the rows' strict xfails that pass.
# Run: bash bench/device_job.sh start bench/jobs/h2d-probe-h200.sh (then `wait`).
set -u
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
S=bench/gpu_session.sh
OUT=${OUT:-/tmp/moedesk-out}
mkdir -p "$OUT"
echo "=== build $(date +%T)"
bash $S build
# a fresh cache folder on the models' drive: the probe measures here, not a stale figure
export MOEDESK_HOME=/tmp/moedesk-h2d-home
rm -rf "$MOEDESK_HOME" && mkdir -p "$MOEDESK_HOME"
echo "=== machine $(date +%T)"
df -hT /tmp | tee "$OUT/h2d-filesystems.txt"
nvidia-smi --query-gpu=name,pcie.link.gen.max,pcie.link.width.max,driver_version --format=csv \
    | tee "$OUT/h2d-gpu.txt"
python3 -c "import pynvml" 2>/dev/null \
    || echo "=== warning: no nvidia-ml-py: the app sees no GPU and predicts without the probe"
echo "=== copy probe, before $(date +%T)"
python3 bench/h2d_probe.py --runs 3 --sizes 16,64,256,1024 --scratch /tmp \
    --json "$OUT/h2d-probe-before.json" 2>&1 | tee "$OUT/h2d-probe-before.txt"
# the summary lines, where bench/device_job.sh's log filter shows them
grep -E "^(RAM probe|device|csv columns)" "$OUT/h2d-probe-before.txt" | sed 's/^/=== /'
python3 -m app.cli hardware 2>&1 | tee "$OUT/h2d-hardware.txt" | grep -E "^(GPU|Host to GPU)" \
    | sed 's/^/=== /'
# preset, layers, placements whose experts are copied
# CASES (lines of "preset layers placement...") picks fewer, for a short lease; CASES=none: none
CASES=${CASES:-"glm-4.5 7 experts-ram first-5
gpt-oss-120b 10 experts-ram first-5
qwen3-235b-a22b 12 experts-ram first-6
kimi-k2 4 experts-ram first-2"}
[ "$CASES" = none ] && CASES=""  # the probe alone
IFS=$'\n' read -r -d '' -a cases <<< "$CASES" || true
for case in "${cases[@]}"; do
    set -- $case
    model=/tmp/fam-$1-$2l.gguf
    echo "=== prefill $1 ($2 layers) $(date +%T)"
    python3 -m app.synthetic "$model" --preset "$1" --layers "$2" | tail -1
    placements=""
    for p in "${@:3}"; do placements="$placements --placement $p"; done
    python3 bench/predict_vs_measure.py --model "$model" --threads 16 --repeats 2 --n-gen 32 \
        --placement gpu $placements 2>&1 | tee "$OUT/h2d-fit-$1-$2l-mmap.txt" | tail -8
    python3 bench/predict_vs_measure.py --model "$model" --threads 16 --repeats 2 --n-gen 32 --no-mmap \
        $placements 2>&1 | tee "$OUT/h2d-fit-$1-$2l-no-mmap.txt" | tail -6
    rm -f "$model"
done
echo "=== copy probe, after $(date +%T)"
python3 bench/h2d_probe.py --runs 3 --scratch /tmp --json "$OUT/h2d-probe-after.json" 2>&1 \
    | tee "$OUT/h2d-probe-after.txt"
grep -E "^csv columns" "$OUT/h2d-probe-after.txt" | sed 's/^/=== /'
cp "$MOEDESK_HOME/cache/bandwidth.json" "$OUT/h2d-bandwidth-cache.json" 2>/dev/null
