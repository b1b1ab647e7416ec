#!/usr/bin/env bash
# nvidia-h200, about 12 min held (thirteenth session): the expert cache (GPU_TESTS=1: its GPU tests first)
# (merge on the GPU; dynamic refresh copying experts from pinned memory on a stream of its own)
# against llama.cpp's best n-cpu-moe at 12.5% and 25% of the expert bytes, one round each:
# Qwen3-30B-A3B shape (realistic routing), Qwen3-235B-A22B shape (20 layers), the 30B with uniform routing.
S=bench/gpu_session.sh
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash $S build
if [ -n "${GPU_TESTS:-}" ]; then
    echo "=== GPU tests ($(date +%T))"
    python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu_expert_cache.py \
        > "$OUT/gpu-tests.txt" 2>&1; tail -3 "$OUT/gpu-tests.txt"
fi
table() { grep -E "^(\||===|routing|model)|sched profile|Error|Traceback|Segmentation|GGML_ASSERT" "$1"; }
for variant in ${VARIANTS:-q30:realistic q235:realistic q30:uniform}; do
    shape=${variant%%:*}; routing=${variant##*:}
    model="/tmp/$shape-$routing.gguf"
    echo "=== $shape $routing ($(date +%T))"
    if [ "$shape" = q30 ]; then
        python3 -m app.synthetic "$model" --preset qwen3-30b-a3b --routing "$routing" > /dev/null
    else
        python3 -m app.synthetic "$model" --preset qwen3-235b-a22b --layers 20 --routing "$routing" > /dev/null
    fi
    budgets=$(for b in ${BUDGETS:-0.125 0.25}; do printf -- "--budget %s " "$b"; done)
    python3 bench/expert_cache.py --model "$model" $budgets --threads 16 \
        --repeats "${REPEATS:-1}" --tokens 128 --sweep 0 --profile --modes "${MODES:-ram,sweep,static,dynamic}" \
        > "$OUT/ec-$shape-$routing.txt" 2>&1
    table "$OUT/ec-$shape-$routing.txt" | grep -v "sched profile"
    rm -f "$model"
done
echo "=== done ($(date +%T))"
