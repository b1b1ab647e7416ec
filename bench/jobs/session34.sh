#!/usr/bin/env bash
# The next lease (one GPU), most wanted first. Left by the thirty-third session, whose lease
# (H100, 10 min) ran the build, depth 8192 on the 30B shape at both budgets, the kernel probe
# and predictions (the probe read 64 GB/s where the host's decodes imply ~90; predictions
# 19-29% low; eager mispicked at 25%), the 30B shape at 25% (two rounds) and every GPU test:
# 1. the build; the kernel probe as changed after it (two models' slopes: 2 and 6 layers) and
#    the predictions; the old probe's slope at 2 / 6 / 16 layers (bench/probe_layers.py);
# 2. the 30B shape at 25% and 12.5%, short prompt, two rounds (the advisor's copy policy pick
#    with the new probe's rate; 12.5% short has not run on a fast host; "mix": half the VRAM
#    as whole layers, fewer cached layers' splits, for a host whose CPU is fast);
# 3. the 235B shape short and deep; 4. uniform routing; 5. the kernel rate by type, 3 passes.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build
q30=/tmp/q30-realistic.gguf
python3 -m app.synthetic "$q30" --preset qwen3-30b-a3b --routing realistic > /dev/null
sync  # the model's 17 GB written out before anything is timed
MODEL=$q30 bash bench/gpu_session.sh probecpu predict | grep -E "^(===|\||CPU kernels|llama.cpp's CPU)"
echo "=== probe slopes by layer count ($(date +%T))"
python3 bench/probe_layers.py --threads 16 --layers 2 6 16 --passes 2 2>&1 | grep -E "^(pass|\|)" \
    | tee "$OUT/probe-layers.txt"
export STEPS=build TOKENS=256 VARIANTS=q30:realistic
REPEATS=2 KEEP_MODEL= BUDGETS="0.25 0.125" MODES=sweep,dynamic,eager,mix bash bench/jobs/expert-cache-policy-h200.sh
REPEATS=1 KEEP_MODEL= VARIANTS=q235:realistic BUDGETS="0.125 0.25" MODES=sweep,dynamic,eager DEPTH=8192 \
    DEPTH_TOKENS=192 bash bench/jobs/expert-cache-policy-h200.sh
# uniform routing with the cache forced at 25% (0.88-0.94x in the eighteenth session; target 0.98x)
REPEATS=1 KEEP_MODEL= VARIANTS=q30:uniform BUDGETS=0.25 MODES=sweep,dynamic \
    bash bench/jobs/expert-cache-policy-h200.sh
echo "=== probe after writes ($(date +%T))"
python3 bench/probe_after_writes.py --threads 16 --write-gb 16 --passes 1 2>&1 | grep "^pass" | tee "$OUT/probe-writes.txt"
echo "=== kernel rate by type ($(date +%T))"
python3 bench/kernel_rate_by_type.py --threads 16 --passes 3 --types Q4_K Q6_K Q2_K IQ2_XXS IQ1_M MXFP4 Q8_0 \
    2>&1 | grep -E "^(pass|\|)"
