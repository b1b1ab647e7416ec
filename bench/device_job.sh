#!/usr/bin/env bash
# Run a device job past the 10 minutes one call may last: start it in the background, then
# poll it call after call (each within 30 s of the last, or the machine and the build go).
#   bash bench/device_job.sh start bench/jobs/NAME.sh   # starts it, then waits like `wait`
#   bash bench/device_job.sh wait                       # up to WAIT_S (570 s) more
# The job writes under /tmp/moedesk-out; each call copies that into its own $OUT (what comes
# back) and prints the log's step lines and tables. The log says "JOB DONE" at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=/tmp/moedesk-job.log
JOB_OUT=/tmp/moedesk-out
case "${1:-}" in
    start)
        [ -f "${2:-}" ] || { echo "usage: $0 start JOBFILE"; exit 2; }
        mkdir -p "$JOB_OUT"
        OUT=$JOB_OUT setsid nohup bash -c "bash '$2'; echo \"JOB DONE \$(date +%T) rc \$?\"" \
            > "$LOG" 2>&1 < /dev/null &
        echo "started $2 ($(date +%T)); log $LOG" ;;
    wait) ;;
    *) echo "usage: $0 start JOBFILE | wait"; exit 2 ;;
esac
while ! grep -q "^JOB DONE" "$LOG" 2>/dev/null && [ "$SECONDS" -lt "${WAIT_S:-570}" ]; do
    sleep 5
done
# steps, tables and errors; the build's compiler lines left out
grep -E "^(===|\||JOB DONE|Traceback|[A-Za-z]*Error)|^(classic|n-cpu-moe|advisor|autotuned|sweep|decode|each figure)" \
    "$LOG" | tail -150
[ -n "${OUT:-}" ] && [ "$OUT" != "$JOB_OUT" ] && cp -r "$JOB_OUT/." "$OUT"/ 2>/dev/null
grep -q "^JOB DONE" "$LOG" && echo "(job finished)" || echo "(job still running: call wait again within 30 s)"
