#!/usr/bin/env bash
# nvidia-h200 (one GPU), about 13 min held: after the speed model's refit on the first run
# (session12-h200.sh), new layer counts to check it out of sample; the memory model on the GPU
# for every family; the SSD stream bench with the GPU holding all but the routed experts.
set -u
export PYTHONPATH="$PWD:/tmp/moedesk-site"
S=bench/gpu_session.sh
OUT=${OUT:-/tmp/moedesk-out}
mkdir -p "$OUT"
echo "=== build $(date +%T)"
bash $S build
echo "=== memory $(date +%T)"
python3 bench/memory_vs_llama.py --shape deepseek-v3:2:16 --shape kimi-k2:2:16 --shape glm-4.5:2:8 \
    --shape gpt-oss-120b:2:8 --shape qwen3-235b-a22b:2:8 --placement gpu --placement experts-ram 2>&1 \
    | tee "$OUT/memory-vs-llama-h200.txt" | grep -E "^\||largest"
for case in "deepseek-v3 6 5" "gpt-oss-120b 8 4" "glm-4.5 9 6" "kimi-k2 4 2"; do
    set -- $case
    model=/tmp/fam-$1-$2l.gguf
    echo "=== family $1 ($2 layers) $(date +%T)"
    python3 -m app.synthetic "$model" --preset "$1" --layers "$2" | tail -1
    python3 bench/predict_vs_measure.py --model "$model" --threads 16 --repeats 1 --n-gen 64 \
        --placement gpu --placement experts-ram --placement "first-$3" 2>&1 \
        | tee "$OUT/families-check-$1-$2l.txt" | tail -6
    rm -f "$model"
done
echo "=== ssd stream $(date +%T)"
python3 -m app.synthetic /tmp/q235-16l.gguf --preset qwen3-235b-a22b --layers 16 --routing realistic | tail -1
python3 bench/ssd_stream.py --model /tmp/q235-16l.gguf --factor 2 --factor 4 --mode off --mode cache \
    --tokens 16 --repeats 1 2>&1 | tee "$OUT/ssd-stream-h200.txt" | tail -14
