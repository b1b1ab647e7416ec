#!/usr/bin/env bash
# nvidia-h200 (one GPU), about 6 min after the build: checks issue 19's two fits on the GPU
# out of sample (the thirteenth session fitted them on the twelfth's H200 runs):
# 1. the CUDA compute buffers (app/advisor/compute_buffer.py: llama.cpp's allocator replayed)
#    at settings the H200 never measured: three layers instead of two, each family's real
#    vocabulary (the logits of a ubatch), ubatch 1024 and a q8_0 cache; and a 12-layer model
#    with experts of half its layers in RAM and with classic offload;
# 2. prefill (app/advisor/prefill.py prefill_seconds) at layer counts the fit did not see:
#    DeepSeek-V3 with 4 layers (its one MoE layer the last: llama.cpp runs its FFN for the
#    output token only, so experts in RAM are not copied), GLM-4.5 with 7, gpt-oss-120b with 10
#    (also without mmap: pinned copies) and Qwen3-235B with 12; two repeats each.
# Run: bash bench/device_job.sh start bench/jobs/families-fit-check-h200.sh (then `wait`).
set -u
export PYTHONPATH="$PWD:/tmp/moedesk-site"
S=bench/gpu_session.sh
OUT=${OUT:-/tmp/moedesk-out}
mkdir -p "$OUT"
echo "=== build $(date +%T)"
bash $S build
echo "=== memory, 3 layers, real vocabularies $(date +%T)"
python3 bench/memory_vs_llama.py --vocab 0 --ctx 8192 --ubatch 1024 --shape deepseek-v3:3:16 \
    --shape kimi-k2:3:16 --shape glm-4.5:3:8 --shape glm-4.5-air:3:8 --shape gpt-oss-120b:3:8 \
    --shape qwen3-235b-a22b:3:8 --shape mixtral-8x7b:3:8 --placement gpu --placement experts-ram 2>&1 \
    | tee "$OUT/memory-vs-llama-3l-h200.txt" | grep -E "^\||^ctx|largest"
echo "=== memory, 12 layers, half in RAM / classic, q8_0 cache $(date +%T)"
python3 bench/memory_vs_llama.py --vocab 0 --ctx 16384 --cache-type q8_0 --shape qwen3-30b-a3b:12:128 \
    --shape gpt-oss-120b:12:16 --placement gpu --placement first-6 --placement layers-7 2>&1 \
    | tee "$OUT/memory-vs-llama-12l-h200.txt" | grep -E "^\||^ctx|largest"
# preset, layers, placements
for case in "deepseek-v3 4 gpu experts-ram" "glm-4.5 7 gpu experts-ram first-5" \
            "gpt-oss-120b 10 gpu experts-ram first-5" "qwen3-235b-a22b 12 gpu experts-ram first-6"; do
    set -- $case
    model=/tmp/fam-$1-$2l.gguf
    echo "=== prefill $1 ($2 layers) $(date +%T)"
    python3 -m app.synthetic "$model" --preset "$1" --layers "$2" | tail -1
    placements=""
    for p in "${@:3}"; do placements="$placements --placement $p"; done
    python3 bench/predict_vs_measure.py --model "$model" --threads 16 --repeats 2 --n-gen 32 $placements \
        2>&1 | tee "$OUT/families-fit-check-$1-$2l.txt" | tail -7
    if [ "$1" = gpt-oss-120b ]; then  # pinned memory: the copy at PCIe speed, not the staging memcpy's
        python3 bench/predict_vs_measure.py --model "$model" --threads 16 --repeats 2 --n-gen 32 --no-mmap \
            --placement experts-ram 2>&1 | tee "$OUT/families-fit-check-$1-$2l-no-mmap.txt" | tail -4
    fi
    rm -f "$model"
done
