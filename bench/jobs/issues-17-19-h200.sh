#!/usr/bin/env bash
# One GPU, about 27 min held (nearly a session's device time; start it with
# bench/device_job.sh and poll): what issues 17 and 19 wait for, the more valuable first.
# 1. expert-cache-policy-h200.sh (~14 min): the CUDA build, the GPU tests (patch 0004 changed
#    since any GPU ran it: the scored policy, the eager setting, a copy stream per GPU), then
#    the dynamic cache's two copy policies against its static set and llama.cpp's best
#    n-cpu-moe, 12.5% and 25% of the expert bytes, mmap off, with the cache's profile line;
# 2. h2d-probe-h200.sh (~12 min, the build kept): the host-to-GPU copy probe beside the copied
#    prefill rows it should predict, mmap on and off, for the refit of the prefill copy rates.
bash bench/jobs/expert-cache-policy-h200.sh
bash bench/jobs/h2d-probe-h200.sh
