#!/usr/bin/env bash
# One GPU, about 13 min held (16 with BUDGETS="0.125 0.25"), the seventeenth session: 1. the CUDA
# build and the GPU tests (patch 0004: maps written once a step; a prompt's ubatch takes the experts the packs hold from
# VRAM instead of copying them from RAM); 2. the Qwen3-30B-A3B shape with routing like Qwen3's
# at 25% (BUDGETS): all experts in RAM (greedy output's reference), the best n-cpu-moe, thrifty
# and "mix" (half the budget as whole layers, a dynamic cache on the rest), mmap off,
# profiled, with the advisor's prediction; 3. the prompt without the packs' experts
# (LLAMA_MOE_CACHE_PROMPT_FROM_VRAM=0: every chosen expert copied from RAM, as before) at 25%,
# for prefill before and after on the same machine; 4. uniform routing at 25% (issue 17's >= 0.98x).
KEEP_MODEL=1 MODES=ram,sweep,dynamic,mix BUDGETS=${BUDGETS:-0.25} VARIANTS="q30:realistic" \
    bash bench/jobs/expert-cache-policy-h200.sh
LLAMA_MOE_CACHE_PROMPT_FROM_VRAM=0 TAG=prompt-from-ram STEPS=build MODES=dynamic BUDGETS=0.25 \
    VARIANTS="q30:realistic" bash bench/jobs/expert-cache-policy-h200.sh
STEPS=build MODES=sweep,dynamic BUDGETS=0.25 VARIANTS=q30:uniform bash bench/jobs/expert-cache-policy-h200.sh
