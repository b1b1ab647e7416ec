#!/usr/bin/env bash
# One GPU, the seventeenth session's last ~8 minutes of device time, most wanted first (what is
# done when the lease ends comes back): the CUDA build; the expert cache's GPU tests (patch
# 0004: maps written once a step, a prompt's ubatch takes the experts the packs hold from VRAM;
# patch 0007's CPU pass runs beside them); bench/cpu_moe_decode.py (a layer's fixed CPU time and
# an expert's, patch 0007 on and off, ~1 min); then bench/jobs/session25b-h100.sh's measurements
# (its GPU tests left to the end).
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build
echo "=== cache GPU tests ($(date +%T))"
python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu_expert_cache.py 2>&1 | tee "$OUT/gpu-tests-cache.txt" | tail -1 | sed "s/^/=== /"
echo "=== CPU MoE decode, a layer and an expert, patch 0007 on and off ($(date +%T))"
python3 bench/cpu_moe_decode.py --threads 16 --dir /tmp > "$OUT/cpu-moe-decode.txt" 2>&1
grep -E "^\||Error|Traceback" "$OUT/cpu-moe-decode.txt"
STEPS=build bash bench/jobs/session25b-h100.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
