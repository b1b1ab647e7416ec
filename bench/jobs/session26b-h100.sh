#!/usr/bin/env bash
# One GPU, about 16 min held, most wanted first (a call cut short brings back what is done; see
# bench/device_job.sh). The eighteenth session's second lease, after patch 0004 changed twice:
# a prompt's held experts copied in one launch a weight (GGML_SCHED_COPY_BATCH) and a cached
# layer's VRAM experts launched before the CPU's input copies (GGML_SCHED_EARLY_LAUNCH).
# 1. the CUDA build; 2. the expert cache's GPU tests (new: both changes' logits against their
# switches); 3. the Qwen3-30B-A3B shape with routing like Qwen3's at 12.5% and 25%, mmap off,
# profiled (a line per prompt graph: its copies); 4. the 25% cache with both changes off (A/B);
# 5. every GPU test; 6. uniform routing at 25% (with the advisor's pick); 7. the 25% rows again
# with OpenMP's threads spinning between CPU splits (OMP_WAIT_POLICY=active); 8. the
# Qwen3-235B-A22B shape (20 layers) at 25%, never measured.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build
echo "=== cache GPU tests ($(date +%T))"
python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu_expert_cache.py 2>&1 \
    | tee "$OUT/gpu-tests-cache.txt" | tail -1 | sed "s/^/=== /"
grep -E "^(FAILED|E )" "$OUT/gpu-tests-cache.txt" | head -20
export STEPS=build KEEP_MODEL=1 VARIANTS=q30:realistic
BUDGETS="0.125 0.25" MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
GGML_SCHED_EARLY_LAUNCH=0 GGML_SCHED_COPY_BATCH=0 TAG=before BUDGETS=0.25 MODES=dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
KEEP_MODEL= VARIANTS=q30:uniform BUDGETS=0.25 MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= OMP_WAIT_POLICY=active TAG=omp-active BUDGETS=0.25 MODES=sweep,dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= VARIANTS=q235:realistic BUDGETS=0.25 MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
