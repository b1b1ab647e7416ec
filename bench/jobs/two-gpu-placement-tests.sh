#!/usr/bin/env bash
# nvidia-h200-x2, about 6 min with the build: the GPU tests again on two GPUs, now that the
# single-GPU placement tests ask for split mode none (the sixth session's one failure there).
S=bench/gpu_session.sh
bash $S build test
