#!/usr/bin/env bash
# nvidia-h200 (one GPU, 16 cores), about 12 min held: engine patch 0004 (hot experts in VRAM)
# on CUDA. The split's greedy output against no cache on a tiny model, then decode with the
# cache against llama.cpp's --n-cpu-moe at 12.5% and 25% of the expert bytes, on the
# Qwen3-30B-A3B shape with uniform routing and with the old routing_skew 0.5.
S=bench/gpu_session.sh
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
bash $S build
table() { grep -E "^(\||===|routing|model)|Error|Traceback" "$1"; }
echo "=== tiny ($(date +%T))"
python3 -m app.engine.synthetic /tmp/t32.gguf --preset tiny --experts 32 --experts-used 4 \
    --routing-skew 0.5 > /dev/null
python3 bench/expert_cache.py --model /tmp/t32.gguf --budget 0.25 --threads 16 --repeats 1 \
    --tokens 48 > "$OUT/ec-tiny.txt" 2>&1
table "$OUT/ec-tiny.txt"
for variant in ${VARIANTS:-uniform:0 skew:0.5}; do
    name=${variant%%:*}; skew=${variant##*:}
    echo "=== q30 $name ($(date +%T))"
    python3 -m app.engine.synthetic "/tmp/q30-$name.gguf" --preset qwen3-30b-a3b \
        --routing-skew "$skew" > /dev/null
    python3 bench/expert_cache.py --model "/tmp/q30-$name.gguf" --budget 0.125 --budget 0.25 \
        --threads 16 --repeats "${REPEATS:-1}" --tokens 64 --sweep 1 > "$OUT/ec-q30-$name.txt" 2>&1
    table "$OUT/ec-q30-$name.txt"
    rm -f "/tmp/q30-$name.gguf"
done
