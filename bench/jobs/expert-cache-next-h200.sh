#!/usr/bin/env bash
# nvidia-h200 (one GPU, 16 cores), about 25 min held (start it with bench/device_job.sh and
# poll): issue 17's next measurements, in three interleaved rounds this time. Per model and
# budget: n-cpu-moe (and with llama.cpp's no_host), the cache static with either merge, with
# and without the overlap, dynamic (after the policy fixes of the tenth session); the
# Qwen3-235B-A22B shape also at depth 8192. VARIANTS / REPEATS / DEPTH pick less.
S=bench/gpu_session.sh
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
bash $S build test
table() { grep -E "^(\||===|routing|model)|Error|Traceback|Segmentation" "$1"; }
MODES=ram,sweep,nohost,static,lean,serial,dynamic
for variant in ${VARIANTS:-q235:realistic q30:realistic q30:uniform}; do
    shape=${variant%%:*}; routing=${variant##*:}
    model="/tmp/$shape-$routing.gguf"
    echo "=== $shape $routing ($(date +%T))"
    if [ "$shape" = q30 ]; then
        python3 -m app.engine.synthetic "$model" --preset qwen3-30b-a3b --routing "$routing" > /dev/null
    else
        python3 -m app.engine.synthetic "$model" --preset qwen3-235b-a22b --layers 20 \
            --routing "$routing" > /dev/null
    fi
    python3 bench/expert_cache.py --model "$model" --budget 0.125 --budget 0.25 --threads 16 \
        --repeats "${REPEATS:-3}" --tokens 128 --sweep 1 --modes "$MODES" \
        > "$OUT/ec-$shape-$routing.txt" 2>&1
    table "$OUT/ec-$shape-$routing.txt"
    if [ "$shape" = q235 ]; then
        python3 bench/expert_cache.py --model "$model" --budget 0.25 --threads 16 \
            --repeats 1 --tokens 64 --sweep 0 --depth "${DEPTH:-8192}" --modes ram,sweep,static,lean \
            > "$OUT/ec-$shape-$routing-depth.txt" 2>&1
        table "$OUT/ec-$shape-$routing-depth.txt"
    fi
    rm -f "$model"
done
