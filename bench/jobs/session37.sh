#!/usr/bin/env bash
# The next lease (one GPU, ~24 min with the build), left by the thirty-sixth session. Issue 19:
# every family's predictions with the version-2 kernel probe and the host-to-GPU copy probe on
# one host (so far only the Qwen3 shapes have rows with them: tests/data/prefill_h100.csv, rows
# 34 and 36; the other families' rows are the twelfth-sixteenth sessions', with the numpy RAM
# probe, ten of them strict xfails). Issue 17: the 30B shape at 25% after 8192 tokens on a
# steady host (the thirty-sixth's second host was not). Then the families' GPU tests.
# 1. build; the copy probe (its figures as the CSV's h2d columns) and the kernel probe;
# 2. predict_vs_measure on each family at real widths, few layers (the twelfth session's cases;
#    gpt-oss-20b, GLM-4.5-Air and Mixtral added): all on the GPU, every routed expert in RAM, about
#    half the expert layers in RAM; each model written and deleted in turn (the disk holds 64 GB);
#    one round each (the twelfth session's rows were one too; eight families in ~15 min); its
#    "csv:" lines are tests/data/prefill_h100.csv's rows as they go in;
# 3. the 30B shape at 25%, depth 8192: n-cpu-moe 36, thrifty, eager capped at 40, 192 tokens (the
#    cache does not see a prompt's routing, so its first tokens after one adapt from the set it
#    had: in replay, from a set chosen at random, 3-7 points fewer hits over the first 64 tokens);
# 4. tests/test_gpu_model_families.py.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build
echo "=== copy probe ($(date +%T))"
python3 bench/h2d_probe.py --runs 3 --scratch /tmp 2>&1 | tee "$OUT/h2d-probe.txt" | tail -4
bash bench/gpu_session.sh probecpu
# preset, layers, the first-N placement (about half of the MoE layers)
for case in "deepseek-v3 5 4" "kimi-k2 3 2" "glm-4.5 6 5" "glm-4.5-air 8 5" "gpt-oss-120b 12 6" \
            "gpt-oss-20b 12 6" "mixtral-8x7b 8 4" "qwen3-235b-a22b 8 4"; do
    set -- $case
    model=/tmp/fam-$1-$2l.gguf
    echo "=== predict $1 ($2 layers, $(date +%T))"
    python3 -m app.synthetic "$model" --preset "$1" --layers "$2" > /dev/null  # routing as the rows before
    sync
    python3 bench/predict_vs_measure.py --model "$model" --threads 16 --repeats 1 --n-gen 64 \
        --placement gpu --placement experts-ram --placement "first-$3" --csv-session 37 2>&1 \
        | tee "$OUT/families-predict-$1-$2l.txt" | grep -E "^(\||csv:|the prompt|host-to-GPU|llama.cpp's CPU)"
    rm -f "$model"
done
REPEATS=1 STEPS=build VARIANTS=q30:realistic BUDGETS=0.25 MODES=sweep,dynamic,eager SHORT=0 DEPTH=8192 DEPTH_TOKENS=192 \
    TAG=uploads40 EXTRA="--no-mmap --uploads 40" bash bench/jobs/expert-cache-policy-h200.sh
echo "=== family GPU tests ($(date +%T))"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_model_families.py 2>&1 | tail -3
