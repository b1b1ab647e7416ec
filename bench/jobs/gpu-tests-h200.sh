#!/usr/bin/env bash
# nvidia-h200 (one GPU), about 6 min held: a CUDA build of the current patch set and the GPU
# tests (run after patch 0003, which changes every load's prefetch).
S=bench/gpu_session.sh
bash $S build model test
