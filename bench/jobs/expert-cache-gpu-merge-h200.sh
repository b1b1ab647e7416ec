#!/usr/bin/env bash
# nvidia-h200, about 9 min held: the expert cache's merge on the GPU (patch 0004 as of the
# thirteenth session) against the merge on the CPU and llama.cpp's best n-cpu-moe, with the
# scheduler's time per graph (LLAMA_SCHED_PROFILE), and dynamic refresh with uploads on the
# cache's own thread; Qwen3-30B-A3B shape, realistic routing, one round.
# (As run; the cpumerge mode and the copy thread for GPUs were removed after it.)
S=bench/gpu_session.sh
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash $S build
echo "=== q30 realistic ($(date +%T))"
python3 -m app.synthetic /tmp/q30-realistic.gguf --preset qwen3-30b-a3b --routing realistic > /dev/null
python3 bench/expert_cache.py --model /tmp/q30-realistic.gguf --budget 0.25 --budget 0.125 --threads 16 \
    --repeats 1 --tokens 128 --sweep 1 --profile --modes ram,sweep,static,cpumerge,serial,dynamic,eager \
    > "$OUT/ec-q30-gpu-merge.txt" 2>&1
grep -E "^(\||===|---|routing|model)|sched profile|Error|Traceback|Segmentation|GGML_ASSERT" "$OUT/ec-q30-gpu-merge.txt"
echo "=== done ($(date +%T))"
