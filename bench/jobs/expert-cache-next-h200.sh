#!/usr/bin/env bash
# nvidia-h200, about 25 min held (start it with bench/device_job.sh and poll): issue 17's next
# measurements, in three interleaved rounds: per model and budget n-cpu-moe (also with
# llama.cpp's no_host), the cache static with either merge (LLAMA_MOE_CACHE_MERGE), with and
# without the overlap, dynamic after the tenth session's policy fixes; the 235B shape first,
# and also at depth 8192.
VARIANTS=${VARIANTS:-"q235:realistic q30:realistic q30:uniform"} \
MODES=${MODES:-ram,sweep,nohost,static,lean,serial,dynamic} REPEATS=${REPEATS:-3} \
DEPTH=${DEPTH:-8192} bash bench/jobs/expert-cache-h200.sh
