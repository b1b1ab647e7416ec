#!/usr/bin/env bash
# nvidia-h200-x2, about 13 min with the build (150 s there): the GPU tests on two GPUs again
# (the single-GPU placement tests now ask for split mode none), then the engine bench on one
# of its GPUs with the routing capture measured within one process and a second engine without
# telemetry (--control): is the +3.6-6.0% of engine+telemetry there the capture, or the spread
# between two processes of the same code?
S=bench/gpu_session.sh
lscpu > "$OUT/lscpu.txt" 2>&1
bash $S build model test
CUDA_VISIBLE_DEVICES=0 REPEATS=5 BENCH_TAG=control BENCH_ARGS=--control bash $S bench
