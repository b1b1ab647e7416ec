#!/usr/bin/env bash
# One GPU, about 14 min held (17 with BUDGETS="0.125 0.25"), the seventeenth session. 1. The CUDA
# build and the GPU tests (patch 0004: maps written once a step, a prompt's ubatch takes the
# experts the packs hold from VRAM; patch 0007: a token's up, gate and SwiGLU in one CPU pass).
# 2. The Qwen3-30B-A3B shape with routing like Qwen3's at 25% (BUDGETS): all experts in RAM
# (greedy output's reference), the best n-cpu-moe, thrifty and "mix" (half the budget as whole
# layers, a dynamic cache on the rest), mmap off, profiled, with the advisor's prediction.
# 3. The same without patch 0007's pass (GGML_CPU_DISABLE_FUSION=1): n-cpu-moe and thrifty.
# 4. The prompt without the packs' experts (LLAMA_MOE_CACHE_PROMPT_FROM_VRAM=0: every chosen
# expert copied from RAM, as before): prefill before and after on one machine. 5. Uniform
# routing at 25% (issue 17's >= 0.98x).
export KEEP_MODEL=1 VARIANTS=q30:realistic
MODES=ram,sweep,dynamic,mix BUDGETS=${BUDGETS:-0.25} bash bench/jobs/expert-cache-policy-h200.sh
export STEPS=build BUDGETS=0.25
GGML_CPU_DISABLE_FUSION=1 TAG=unfused MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= LLAMA_MOE_CACHE_PROMPT_FROM_VRAM=0 TAG=prompt-from-ram MODES=dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= MODES=sweep,dynamic VARIANTS=q30:uniform bash bench/jobs/expert-cache-policy-h200.sh
