#!/usr/bin/env bash
# One GPU, about 20 min held, most wanted first (a call cut short brings back what is done; see
# bench/device_job.sh). What the seventeenth session wrote and could not run (its one lease came
# with 395 s of device time left, spent on the build):
# 1. the CUDA build; 2. the expert cache's GPU tests (patch 0004: maps written once a step, a
# prompt's ubatch takes the experts the packs hold from VRAM; patch 0007's CPU pass beside them);
# 3. bench/cpu_moe_decode.py (a layer's fixed CPU time and an expert's, patch 0007 on and off,
# ~1 min); 4. the Qwen3-30B-A3B shape with routing like Qwen3's at 25% of the expert bytes, mmap
# off, profiled: the best n-cpu-moe and thrifty; 5. the same without patch 0007's pass
# (GGML_CPU_DISABLE_FUSION=1); 6. "mix" (half the budget as whole layers, a dynamic cache on the
# rest) and all experts in RAM (greedy output's reference); 7. the prompt without the packs'
# experts (LLAMA_MOE_CACHE_PROMPT_FROM_VRAM=0, as before); 8. uniform routing (issue 17's
# >= 0.98x); 9. every GPU test.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build
echo "=== cache GPU tests ($(date +%T))"
python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu_expert_cache.py 2>&1 \
    | tee "$OUT/gpu-tests-cache.txt" | tail -1 | sed "s/^/=== /"
echo "=== CPU MoE decode, a layer and an expert, patch 0007 on and off ($(date +%T))"
python3 bench/cpu_moe_decode.py --threads 16 --dir /tmp > "$OUT/cpu-moe-decode.txt" 2>&1
grep -E "^\||Error|Traceback" "$OUT/cpu-moe-decode.txt"
export STEPS=build KEEP_MODEL=1 VARIANTS=q30:realistic BUDGETS=0.25
MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
GGML_CPU_DISABLE_FUSION=1 TAG=unfused MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
TAG=mix MODES=ram,mix bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= LLAMA_MOE_CACHE_PROMPT_FROM_VRAM=0 TAG=prompt-from-ram MODES=dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= MODES=sweep,dynamic VARIANTS=q30:uniform bash bench/jobs/expert-cache-policy-h200.sh
echo "=== all GPU tests ($(date +%T))"
bash bench/gpu_session.sh test | tail -1 | sed "s/^/=== /"
