#!/usr/bin/env bash
# nvidia-h200, about 12 min held: the expert cache as of the thirteenth session (merge on the
# GPU; dynamic refresh copying experts from pinned memory on a stream of its own) against
# llama.cpp's best n-cpu-moe at 12.5% and 25% of the expert bytes, one round each, with the
# scheduler's time per graph: the Qwen3-30B-A3B shape (realistic routing), the Qwen3-235B-A22B
# shape (20 layers), the 30B with uniform routing. STEPS="build test" runs the GPU tests too.
STEPS=${STEPS:-build} VARIANTS=${VARIANTS:-"q30:realistic q235:realistic q30:uniform"} \
MODES=${MODES:-ram,sweep,static,dynamic} SWEEP=${SWEEP:-0} PROFILE=${PROFILE:-1} \
bash bench/jobs/expert-cache-h200.sh
