#!/usr/bin/env bash
# One GPU, about 14 min held: the dynamic expert cache's scored policy (fourteenth session)
# against its static set and llama.cpp's best n-cpu-moe at 12.5% and 25% of the expert bytes,
# loaded with mmap off (CPU weights in the GPU's pinned host memory: the only way the cache's
# copies run beside decoding; with mmap they run between tokens; n-cpu-moe both ways), with the
# scheduler's and the cache's time per step (copies started, time waiting for them, throttle):
# the Qwen3-30B-A3B shape with routing like Qwen3's and uniform, then the Qwen3-235B-A22B shape
# (20 layers). The GPU tests first (the patch changed). EXTRA="" measures the mapped file.
# Both of the engine's copy policies: thrifty (the default) and eager (fifteenth session: more
# copies for more hits, if the copy engine's reads cost this host's CPU nothing), ~1.5 min more.
STEPS=${STEPS:-"build test"} VARIANTS=${VARIANTS:-"q30:realistic q30:uniform q235:realistic"} \
MODES=${MODES:-sweep,static,dynamic,eager} SWEEP=${SWEEP:-0} PROFILE=${PROFILE:-1} EXTRA=${EXTRA---no-mmap} \
bash bench/jobs/expert-cache-h200.sh
