#!/usr/bin/env bash
# nvidia-h200 (one GPU), about 14 min held: a CUDA build of the current patch set, the GPU tests
# (hot experts in VRAM, experts from the SSD with a GPU: VRAM, then RAM, then SSD), then the
# SSD streaming bench on the machine's disk with a 24 GB Qwen3-235B-shaped model at 2x and 4x
# its memory limit (one round; the 128 GB RAM machine needs the cgroup to make it larger than RAM).
set -u
export PYTHONPATH="$PWD:/tmp/moedesk-site"
S=bench/gpu_session.sh
bash $S build model test
python -m app.synthetic /tmp/q235-16l.gguf --preset qwen3-235b-a22b --layers 16 --routing realistic
python bench/ssd_stream.py --model /tmp/q235-16l.gguf --factor 2 --factor 4 --mode off --mode advise --mode cache --tokens 24 --repeats 1
