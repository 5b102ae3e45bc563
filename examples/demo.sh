#!/usr/bin/env bash
# demo.sh BATON: a small end-to-end run on the embedded SQLite default. Shell-command jobs
# are enqueued (one fails and is retried, one is scheduled, three calendar syncs for one
# user are limited to one at a time), `baton start` runs a worker and a dispatcher, and
# the demo waits until every job has finished.
set -euo pipefail
BATON=$(realpath "$1")
DIR=$(mktemp -d "${TMPDIR:-/tmp}/baton-demo-XXXXXX")
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
cd "$DIR"

cat > baton.yml <<'YML'
jobs:
  SendWelcomeEmail:
    queue: mail
    command: 'to=$(cat); sleep 0.2; echo "sent welcome mail to $to (job $BATON_JOB_ID)"'
  FlakyImport:
    command: 'if [ "$BATON_ATTEMPT" -lt 2 ]; then echo "upstream timed out" >&2; exit 75; fi; echo "import done on attempt $BATON_ATTEMPT"'
    retry: { attempts: 3, backoff: fixed, base: 1 }
  GoogleCalendarSyncJob:
    queue: high
    command: 'u=$(sed "s/[^0-9]//g"); echo "  sync user $u: start"; sleep 0.3; echo "  sync user $u: end (fencing token $BATON_FENCING_TOKEN)"'
    concurrency:
      to: 1
      key: "google_calendar_sync_user_{user_id}"
workers:
  - queues: [high, mail, "*"]
    threads: 4
YML

echo "== baton init"
"$BATON" init
echo "== enqueue 5 mails, a flaky import and a report due in 2 seconds"
for who in ada grace edsger barbara ken; do "$BATON" enqueue SendWelcomeEmail --args "\"$who\"" >/dev/null; done
"$BATON" enqueue FlakyImport >/dev/null
"$BATON" enqueue SendWelcomeEmail --args '"scheduled-report"' --in 2 >/dev/null
echo "== three calendar syncs for user 123 and one for user 456, at most one per user at a time"
for u in 123 123 123 456; do "$BATON" enqueue GoogleCalendarSyncJob --args "{\"user_id\": $u}" >/dev/null; done
"$BATON" jobs
"$BATON" semaphores

echo "== baton start (worker + dispatcher)"
"$BATON" start --log-level warn &
PID=$!

pending() { "$BATON" jobs --json --limit 1000 | grep -cE '"status":"(ready|scheduled|claimed)"' || true; }
for _ in $(seq 1 300); do
  [ "$(pending)" -eq 0 ] && break
  sleep 0.1
done
kill -TERM "$PID"
wait "$PID" || true

echo "== every job is over"
"$BATON" jobs
"$BATON" queues
