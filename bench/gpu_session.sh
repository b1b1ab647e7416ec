#!/usr/bin/env bash
# Build the CUDA engine, write the Qwen3-30B-A3B-shaped synthetic model, run the GPU tests and
# the engine benchmark, on a CUDA machine without network access (the accelerator machine).
#
# CARRY must hold the llama-cpp-python source tree (unpacked sdist) and the pure-Python wheels
# the machine lacks (gguf, diskcache, pytest, ...). Steps are skipped when their output exists,
# so the script can be re-run after an interruption. Usage:
#   CARRY=.carry OUT=/tmp/out bash bench/gpu_session.sh \
#       [build|pack|model|model235|test|cachetest|bench|probecpu|predict|serve|tune|all]...
# Name .carry in the device tool's `carry`. Seen on the H100 (2026-11-23, four sessions): build
# 310-357 s (build pack model test in one call: 425 s), model 14 s, model235 21-36 s, test 66-90 s, predict 120 s, bench (two placements,
# --repeats 9) 240 s, serve with SERVE_EXPERTS=none 41 s (both placements about 300 s), tune at
# one budget with SWEEP=8 about 390 s; tune with DEPTH, two strategies, no autotune: Qwen3-30B
# shape (REPEATS=2, DEPTH=16384) about 170 s, the 235B shape (REPEATS=1, DEPTH=8192) 85 s a budget.
# Fifth session: bench (two placements, --repeats 9) 270 s, one placement 60 s; tune of the 235B
# shape with autotune (60 s) and SWEEP=5, REPEATS=1: 540 s at 12 GB, 470 s at 24 GB.
# Sixth: nvidia-h200-x2 (32 cores) build 150 s, test 125 s; H100 bench with bare+capture
# (four runners, --repeats 7) over 300 s for two placements; 235B tune at 12 GB with REPEATS=2
# and autotune 120 s: 700 s.
# Longer than the 10 minutes of one call: bench/device_job.sh with a job file (bench/jobs/).
# tune: BUDGETS="12 24" (GB), SWEEP=4 (layers per sweep step), TUNE_SECONDS=150,
#       TUNE_MODEL=/tmp/moedesk-q235-20l.gguf (after the model235 step)
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=${CARRY:-.carry}
OUT=${OUT:-/tmp/moedesk-out}
MODEL=${MODEL:-/tmp/moedesk-q30.gguf}
MODEL235=${MODEL235:-/tmp/moedesk-q235-20l.gguf}
THREADS=${THREADS:-16}
SITE=/tmp/moedesk-site
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$SITE" PYTHONUNBUFFERED=1

step_build() {
    if python3 -c "import llama_cpp, sys; from app.engine import ggml_backend as g; \
sys.exit(0 if 'CUDA' in g.backends() and g.has_routing_patch() else 1)" 2>/dev/null; then
        echo "engine already built"; return
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$CARRY"/*.whl
    if [ -f "$CARRY/llama-cuda.txz" ]; then  # a build packed by the pack step of a session before
        tar xJf "$CARRY/llama-cuda.txz" -C "$SITE"
        python3 -m app.cli info | tee "$OUT/info.txt"
        return
    fi
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        python3 installers/install.py --venv - --offline --engine-only \
        --sdist "$CARRY"/llama_cpp_python-*/
    python3 -m app.cli info | tee "$OUT/info.txt"
}

step_pack() {  # the CUDA build in 15 MiB pieces under $OUT, to carry next time instead of a build:
    # here, `cat llama-cuda.txz.* > .carry/llama-cuda.txz` (and the sdist may then stay behind).
    # The H100 build (sm_90 only) packed to 121 MB: over the 64 MiB a call may carry, and only
    # the first 4 pieces came back. Kept for a smaller build (e.g. a trimmed GGML_CUDA config).
    local pkg
    pkg=$(python3 -c "import llama_cpp, os; print(os.path.dirname(os.path.dirname(llama_cpp.__file__)))")
    XZ_OPT="-T0 -6" tar cJf /tmp/llama-cuda.txz -C "$pkg" llama_cpp
    ls -l /tmp/llama-cuda.txz
    split -b 15M /tmp/llama-cuda.txz "$OUT/llama-cuda.txz."
}

step_model() {
    [ -f "$MODEL" ] && { echo "model exists"; return; }
    /usr/bin/time -v python3 -m app.synthetic "$MODEL" --preset qwen3-30b-a3b \
        2>&1 | tee "$OUT/synth.txt" | grep -v "^\s" || true
    sync  # written out before the steps that time (the write-out takes CPU time)
}

step_model235() {  # Qwen3-235B-A22B's real shapes, 20 of its 94 layers (29.6 GB, fits the disk)
    [ -f "$MODEL235" ] && { echo "model exists"; return; }
    python3 -m app.synthetic "$MODEL235" --preset qwen3-235b-a22b --layers 20 \
        2>&1 | tail -2 | tee "$OUT/synth235.txt"
    sync
}

step_test() {
    # only the files with GPU tests: the others may import Qt, which this machine lacks (so must
    # not these: tests/test_gpu_tests_import_bare.py); one that fails to import stops no other
    python3 -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors \
        $(grep -l "pytest.mark.gpu" tests/test_*.py) \
        2>&1 | tee "$OUT/gpu-tests.txt"
}

step_cachetest() {  # the expert cache's GPU tests alone (patch 0004), their failures listed
    python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu_expert_cache.py 2>&1 \
        | tee "$OUT/gpu-tests-cache.txt" | tail -1 | sed "s/^/=== /"
    grep -E "^(FAILED|E  +(assert|AssertionError))" "$OUT/gpu-tests-cache.txt" | head -20 || true
}

step_bench() {  # the watchdog dumps the stacks and exits if a load hangs (it did, twice)
    # PLACEMENTS="gpu experts-ram" (default), BENCH_TAG=name: bench-name.txt (variants in one call),
    # BENCH_ARGS: more options (e.g. --control)
    local placement args=()
    for placement in ${PLACEMENTS:-gpu experts-ram}; do args+=(--placement "$placement"); done
    python3 bench/engine_overhead.py --model "$MODEL" --threads "$THREADS" --repeats "${REPEATS:-9}" \
        "${args[@]}" --watchdog "${WATCHDOG:-300}" ${BENCH_ARGS:-} \
        2>&1 | tee "$OUT/bench${BENCH_TAG:+-$BENCH_TAG}.txt"
}

step_probecpu() {  # issue 19: llama.cpp's CPU kernels timed on routed experts (the kernel probe),
    # remembered in this machine's probe cache: the predictions of the steps after it use it
    python3 -m app.cli probe-cpu --threads "$THREADS" 2>&1 | tee "$OUT/probe-cpu.txt" | tail -1 | sed "s/^/=== /"
}

step_predict() {  # issue 3: the advisor's speed prediction against the engine
    python3 bench/predict_vs_measure.py --model "$MODEL" --threads "$THREADS" --repeats 2 \
        --placement gpu --placement experts-ram --placement first-24 --placement first-36 \
        2>&1 | tee "$OUT/predict.txt"
}

step_serve() {  # issue 7: the OpenAI server under 1-8 streams, one at a time vs in one batch
    for experts in ${SERVE_EXPERTS:-none all}; do
        for n in ${SERVE_PARALLEL:-1 8}; do
            python3 bench/serve_load.py --model "$MODEL" --experts-in-ram "$experts" \
                --threads "$THREADS" --ctx 4096 --parallel "$n" --concurrency 1 2 4 8 \
                --per-client 1 --max-tokens 128 --json "$OUT/serve-$experts-p$n.json" \
                2>&1 | grep -v '^loading' | tee "$OUT/serve-$experts-p$n.txt"
        done
    done
}

step_tune() {
    # issue 6: llama.cpp's strategies, the advisor's plan and the autotuned plan at a budget
    # TUNE_MODEL=path picks the model (default $MODEL); its file name tags the output.
    # DEPTH=N adds decode after an N-token prompt (CTX must exceed it), STRATEGIES a subset,
    # REPEATS the runs per figure, TUNE_SECONDS=0 skips the autotune search.
    local model=${TUNE_MODEL:-$MODEL} tag
    tag=$(basename "$model" .gguf)${DEPTH:+-d$DEPTH}
    for budget in ${BUDGETS:-12}; do
        python3 -m app.cli bench "$model" --vram-budget "$budget" --threads "$THREADS" \
            --tune-seconds "${TUNE_SECONDS:-150}" ${SWEEP:+--sweep "$SWEEP"} \
            --ctx "${CTX:-8192}" --repeats "${REPEATS:-3}" ${DEPTH:+--decode-depth "$DEPTH"} \
            ${STRATEGIES:+--strategies $STRATEGIES} \
            --out "$OUT/tune-$tag-${budget}gb" 2>&1 | tee "$OUT/tune-$tag-${budget}gb.txt"
    done
}

[ $# -gt 0 ] || set -- all
for step in "$@"; do  # several steps in one call, in order: build pack model test
    echo "=== $step ($(date +%T))"
    case "$step" in
        build) step_build ;;
        pack) step_pack ;;
        model) step_model ;;
        model235) step_model235 ;;
        test) step_test ;;
        cachetest) step_cachetest ;;
        bench) step_bench ;;
        tune) step_tune ;;
        probecpu) step_probecpu ;;
        predict) step_predict ;;
        serve) step_serve ;;
        all) step_build; step_model; step_test; step_bench ;;
        *) echo "unknown step $step"; exit 2 ;;
    esac
done
