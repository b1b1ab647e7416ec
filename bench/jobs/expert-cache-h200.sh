#!/usr/bin/env bash
# nvidia-h200 (one GPU, 16 cores), about 15 min held as run in the tenth session: engine patch
# 0004 (hot experts in VRAM) on CUDA. The GPU tests (all of them: the patch changes the
# scheduler's loop), then decode with the cache against llama.cpp's --n-cpu-moe at 12.5% and
# 25% of the expert bytes, on the Qwen3-30B-A3B shape with routing like Qwen3's and uniform,
# and on the Qwen3-235B-A22B shape (20 of its 94 layers) with routing like Qwen3's.
# VARIANTS picks the models, MODES the placements (bench/expert_cache.py --modes), REPEATS the
# interleaved rounds, TOKENS the decoded tokens (128), BUDGETS the shares of the expert bytes,
# SWEEP the n-cpu-moe points past the best, PROFILE=1 the scheduler's time per graph; STEPS the
# gpu_session.sh steps first ("build" alone skips the GPU tests); DEPTH=N adds decode after an
# N-token prompt (the same placements, DEPTH_TOKENS tokens: 64; past 128 the profile has a
# window of graphs without the prompt's; SHORT=0 skips the short prompt's run before it).
# EXTRA: more bench/expert_cache.py arguments
# (e.g. --no-mmap). TAG: a suffix of the output files' names; KEEP_MODEL=1 leaves the models for
# the next call (else removed).
S=bench/gpu_session.sh
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
bash $S ${STEPS:-build test}
table() { grep -E "^(\||===|routing|model|the advisor|RAM probe)|Error|Traceback|Segmentation|GGML_ASSERT" "$1"; }
budgets=$(for b in ${BUDGETS:-0.125 0.25}; do printf -- "--budget %s " "$b"; done)
run() {  # the model $model of $shape and $routing; $1: the output file's suffix; then more arguments
    local out="$OUT/ec-$shape-$routing${TAG:+-$TAG}$1.txt"; shift
    python3 bench/expert_cache.py --model "$model" $budgets \
        --threads 16 --repeats "${REPEATS:-1}" --sweep "${SWEEP:-1}" \
        $([ "${PROFILE:-0}" = 1 ] && echo --profile) ${MODES:+--modes "$MODES"} ${EXTRA:-} "$@" \
        > "$out" 2>&1
    table "$out"
    # where a decoded token's time went, per placement and round (bench/sched_profile.py)
    [ "${PROFILE:-0}" != 1 ] || python3 bench/sched_profile.py "$out" | grep "^|"
}
for variant in ${VARIANTS:-q30:realistic q30:uniform q235:realistic}; do
    shape=${variant%%:*}; routing=${variant##*:}
    model="/tmp/$shape-$routing.gguf"
    echo "=== $shape $routing ($(date +%T))"
    if [ -f "$model" ]; then
        echo "(model kept from a call before)"
    elif [ "$shape" = q30 ]; then
        python3 -m app.synthetic "$model" --preset qwen3-30b-a3b --routing "$routing" > /dev/null
    else
        python3 -m app.synthetic "$model" --preset qwen3-235b-a22b --layers 20 \
            --routing "$routing" > /dev/null
    fi
    sync  # the model's bytes written out before the timing (the write-out takes CPU time)
    [ "${SHORT:-1}" = 0 ] || run "" --tokens "${TOKENS:-128}"
    # issue 17's depth: decode after a DEPTH-token prompt, the same placements
    [ -z "${DEPTH:-}" ] || run -depth --tokens "${DEPTH_TOKENS:-64}" --depth "$DEPTH"
    [ -n "${KEEP_MODEL:-}" ] || rm -f "$model"
done
echo "=== done ($(date +%T))"
