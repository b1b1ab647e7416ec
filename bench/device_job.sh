#!/usr/bin/env bash
# Run a device job past the 10 minutes one call may last: start it in the background, then
# poll it call after call (each within 30 s of the last, or the machine and the build go).
#   bash bench/device_job.sh start bench/jobs/NAME.sh   # starts it, then waits like `wait`
#   bash bench/device_job.sh wait                       # up to WAIT_S (570 s) more
# The job writes under /tmp/moedesk-out; each call copies that into its own $OUT (what comes
# back: the log and job-files.txt, see collect) and prints the log's step lines and tables.
# The log says "JOB DONE" at the end. With less device time left than WAIT_S, set WAIT_S under
# it: the call then ends with its output; cut short, it brings back what was copied last
# (every 20 s).
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=/tmp/moedesk-job.log
JOB_OUT=/tmp/moedesk-out
TREE=/tmp/moedesk-job-tree
case "${1:-}" in
    start)
        [ -f "${2:-}" ] || { echo "usage: $0 start JOBFILE"; exit 2; }
        mkdir -p "$JOB_OUT"
        # the job runs from a copy of the tree: each later call copies this session's tree
        # again, and a job reading its scripts meanwhile found them gone (thirty-fourth session)
        rm -rf "$TREE" && mkdir -p "$TREE" && cp -a . "$TREE" || exit 1
        (cd "$TREE" && OUT=$JOB_OUT setsid nohup bash -c "bash '$2'; echo \"JOB DONE \$(date +%T) rc \$?\"" \
            > "$LOG" 2>&1 < /dev/null &)
        echo "started $2 ($(date +%T)); log $LOG" ;;
    wait) ;;
    *) echo "usage: $0 start JOBFILE | wait"; exit 2 ;;
esac
# the job's files and its log into this call's $OUT, every 20 s: a call cut short by its limit
# (the device time left) still brings back what $OUT holds (the seventeenth session lost a
# whole lease's files, copied only at the end). A call brings back at most 8 files (16 MiB
# each): the twentieth session's job wrote 13 and lost five. So two: the log, and job-files.txt,
# every file the job wrote, each line prefixed by the file's name: small files whole, the big
# outputs (the engine's log lines in them) as the lines the docs keep (tables, the scheduler's
# and the cache's profiles). Back here: sed -n 's/^ec-q30-realistic.txt: //p' job-files.txt
KEEP='^(model |sched profile|moe cache profile|===|---|\||the advisor|RAM probe|Host to GPU|host-to-GPU|speed model|Qwen3|llama.cpp.s CPU|CPU kernels|[0-9]+ (passed|failed)|FAILED|E  |Traceback|[A-Za-z]*Error)'
collect() {
    [ -n "${OUT:-}" ] && [ "$OUT" != "$JOB_OUT" ] || return 0
    cp "$LOG" "$OUT/job.log" 2>/dev/null
    local f name
    for f in "$JOB_OUT"/*; do
        [ -f "$f" ] || continue
        name=$(basename "$f")
        if [ "$(stat -c %s "$f")" -lt 65536 ]; then cat "$f"; else grep -E "$KEEP" "$f"; fi \
            | sed "s|^|$name: |"
    done > "$OUT/job-files.txt" 2>/dev/null
}
while ! grep -q "^JOB DONE" "$LOG" 2>/dev/null && [ "$SECONDS" -lt "${WAIT_S:-570}" ]; do
    sleep 5
    [ $((SECONDS % 20)) -lt 5 ] && collect
done
# steps, tables and errors; the build's compiler lines left out
grep -E "^(===|\||JOB DONE|Traceback|[A-Za-z]*Error)|^(classic|n-cpu-moe|advisor|the advisor|autotuned|sweep|decode|each figure)" \
    "$LOG" | tail -150
collect
grep -q "^JOB DONE" "$LOG" && echo "(job finished)" || echo "(job still running: call wait again within 30 s)"
