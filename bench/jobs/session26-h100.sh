#!/usr/bin/env bash
# One GPU, about 20 min held, most wanted first (a call cut short brings back what is done; see
# bench/device_job.sh). What the seventeenth session wrote and could not run (its one lease came
# with 395 s of device time left, spent on the build): the CUDA build; the expert cache's GPU
# tests (patch 0004: maps written once a step, a prompt's ubatch takes the experts the packs
# hold from VRAM; patch 0007's CPU pass beside them); bench/cpu_moe_decode.py; the measurements of
# bench/jobs/session25b-h100.sh (the 30B shape at 25%: n-cpu-moe and thrifty, the same without
# patch 0007, mix and all in RAM, the prompt as before, uniform routing); then all GPU tests.
bash bench/jobs/session25c-h100.sh
