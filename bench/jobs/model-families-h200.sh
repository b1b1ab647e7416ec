#!/usr/bin/env bash
# nvidia-h200 (one GPU), about 15 min held: a CUDA build of the current patch set
# (0001-0006), the model families' GPU tests (every family with every placement), then the
# advisor's prediction against the engine for each family at real widths with few layers:
# all on the GPU, all routed experts in RAM, half the expert layers in RAM (issue 19's table).
# Models are written and deleted one by one (the disk holds 64 GB). The twelfth session ran
# its parts as session12-h200.sh and session12b-h200.sh (one repeat each); this one repeats
# twice, for the next refit.
set -u
export PYTHONPATH="$PWD:/tmp/moedesk-site"
S=bench/gpu_session.sh
OUT=${OUT:-/tmp/moedesk-out}
mkdir -p "$OUT"
bash $S build
python3 -m pytest -q -m gpu tests/test_gpu_model_families.py 2>&1 | tail -15 | tee "$OUT/families-gpu-tests.txt"
# preset, layers, the first-N placement (about half of the MoE layers)
for case in "deepseek-v3 5 4" "kimi-k2 3 2" "glm-4.5 6 5" "gpt-oss-120b 12 6" "qwen3-235b-a22b 8 4"; do
    set -- $case
    model=/tmp/fam-$1-$2l.gguf
    python3 -m app.synthetic "$model" --preset "$1" --layers "$2" | tail -1
    python3 bench/predict_vs_measure.py --model "$model" --threads 16 --repeats 2 \
        --placement gpu --placement experts-ram --placement "first-$3" 2>&1 \
        | tee "$OUT/families-predict-$1-$2l.txt" | tail -12
    rm -f "$model"
done
