#!/usr/bin/env bash
# One GPU, the seventeenth session's short lease, most wanted first (what is done when the
# lease ends comes back). 1. The CUDA build and the GPU tests (patch 0004: maps written once a
# step, a prompt's ubatch takes the experts the packs hold from VRAM; patch 0007: a token's up,
# gate and SwiGLU in one CPU pass), ~7.5 min. 2. The Qwen3-30B-A3B shape with routing like
# Qwen3's at 25% of the expert bytes, mmap off, profiled: the best n-cpu-moe and thrifty (~2.5
# min with the model written); 3. the same without patch 0007's pass (GGML_CPU_DISABLE_FUSION=1);
# 4. "mix" (half the budget as whole layers, a dynamic cache on the rest) and all experts in
# RAM (greedy output's reference); 5. the prompt without the packs' experts
# (LLAMA_MOE_CACHE_PROMPT_FROM_VRAM=0, as before); 6. uniform routing (issue 17's >= 0.98x).
export KEEP_MODEL=1 VARIANTS=q30:realistic BUDGETS=0.25
MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
export STEPS=build
GGML_CPU_DISABLE_FUSION=1 TAG=unfused MODES=sweep,dynamic bash bench/jobs/expert-cache-policy-h200.sh
TAG=mix MODES=ram,mix bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= LLAMA_MOE_CACHE_PROMPT_FROM_VRAM=0 TAG=prompt-from-ram MODES=dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
KEEP_MODEL= MODES=sweep,dynamic VARIANTS=q30:uniform bash bench/jobs/expert-cache-policy-h200.sh
