#!/usr/bin/env bash
# The thirty-fourth session's last device minutes (~6): the build and the kernel probe with its
# third model (wider experts): the cost an expert has beside its bytes on a GPU host.
export PYTHONPATH="$PWD:/tmp/moedesk-site" PYTHONUNBUFFERED=1
bash bench/gpu_session.sh build
bash bench/gpu_session.sh probecpu
grep -E "decoding|kernel" "$OUT/probe-cpu.txt" | tail -3
