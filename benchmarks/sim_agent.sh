#!/bin/sh
# The benchmarks' simulated agent: a POSIX sh command agent (no Python start-up to pay, so a
# benchmark measures the engine, not the agent).
#
#   sh benchmarks/sim_agent.sh [DURATIONS_TXT [TRACE_FILE]]
#
# Reads the prompt on stdin, sleeps the seconds given for $SPECWAVE_TASK_ID in DURATIONS_TXT
# (lines "task_id seconds"; a missing file or task means 0: a zero-work agent), appends
# "task_id start end" (epoch seconds) to TRACE_FILE when given, and answers like a
# well-behaved worker: a fenced json result, then TASK COMPLETE.
start=$(date +%s.%N)
cat > /dev/null
d=0
if [ -n "$1" ] && [ -r "$1" ]; then
  while read -r id sec; do
    if [ "$id" = "$SPECWAVE_TASK_ID" ]; then d=$sec; break; fi
  done < "$1"
fi
if [ "$d" != "0" ]; then sleep "$d"; fi
if [ -n "$2" ]; then echo "$SPECWAVE_TASK_ID $start $(date +%s.%N)" >> "$2"; fi
printf '```json\n{"status": "pass", "files_modified": [], "files_created": [], "test_results": {"ran": 0, "passed": 0, "failed": 0}, "blocker": null, "notes": "simulated: %s s"}\n```\nTASK COMPLETE\n' "$d"
