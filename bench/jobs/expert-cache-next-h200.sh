#!/usr/bin/env bash
# nvidia-h200, about 22 min held (start it with bench/device_job.sh and poll): issue 17's next
# measurements, in two interleaved rounds: per model and budget n-cpu-moe (also with
# llama.cpp's no_host), the cache static and dynamic (as of the thirteenth session: merge on
# the GPU, copies beside decoding); the 235B shape first, and also at depth 8192.
# VARIANTS="q30:uniform" afterwards checks uniform routing (about 7 min more).
VARIANTS=${VARIANTS:-"q235:realistic q30:realistic"} \
MODES=${MODES:-ram,sweep,nohost,static,dynamic} REPEATS=${REPEATS:-2} \
DEPTH=${DEPTH:-8192} bash bench/jobs/expert-cache-h200.sh
