#!/usr/bin/env bash
# nvidia-h200 (one GPU), about 22 min held: the twelfth session's device run, most needed first.
# 1. a CUDA build of patches 0001-0006 and every GPU test (hot experts in VRAM, experts from the
#    SSD with a GPU, every model family with every placement);
# 2. issue 19's family table: the advisor's prediction against the engine for DeepSeek-V3,
#    Kimi-K2, GLM-4.5, gpt-oss-120b and (control) Qwen3-235B at real widths, few layers, with
#    all on the GPU, all routed experts in RAM and about half of them in RAM;
# 3. issue 22's SSD stream bench on this machine's disk (24 GB model at 2x and 4x its memory).
set -u
export PYTHONPATH="$PWD:/tmp/moedesk-site"
S=bench/gpu_session.sh
OUT=${OUT:-/tmp/moedesk-out}
mkdir -p "$OUT"
echo "=== build $(date +%T)"
bash $S build
echo "=== gpu tests $(date +%T)"
bash $S test | tail -25
for case in "deepseek-v3 5 4" "gpt-oss-120b 12 6" "glm-4.5 6 5" "kimi-k2 3 2" "qwen3-235b-a22b 8 4"; do
    set -- $case
    model=/tmp/fam-$1-$2l.gguf
    echo "=== family $1 ($2 layers) $(date +%T)"
    python3 -m app.synthetic "$model" --preset "$1" --layers "$2" | tail -1
    python3 bench/predict_vs_measure.py --model "$model" --threads 16 --repeats 1 --n-gen 64 \
        --placement gpu --placement experts-ram --placement "first-$3" 2>&1 \
        | tee "$OUT/families-predict-$1-$2l.txt" | tail -8
    rm -f "$model"
done
echo "=== ssd stream $(date +%T)"
python3 -m app.synthetic /tmp/q235-16l.gguf --preset qwen3-235b-a22b --layers 16 --routing realistic | tail -1
python3 bench/ssd_stream.py --model /tmp/q235-16l.gguf --factor 2 --factor 4 --mode off --mode cache \
    --tokens 24 --repeats 1 2>&1 | tee "$OUT/ssd-stream-h200.txt" | tail -12
