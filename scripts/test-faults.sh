#!/usr/bin/env bash
# The fault suite: restarts RabbitMQ and Postgres, kills workers and stops gateways under load,
# then proves nothing was lost or applied twice. Runs serially and never beside other tests, since
# it restarts the shared services. Prints one "FAULT | ..." line per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
export SQLX_OFFLINE=true
cargo build --locked --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo nextest run --locked -p clerk-sync-faults --test faults --run-ignored only --test-threads 1 --no-capture --no-fail-fast >"$log" 2>&1 || status=$?
grep -E 'PASS|FAIL|panicked|assertion|Summary' "$log" || true
echo
echo "scenario | in flight | injected | client saw | verified"
grep '^FAULT |' "$log" | cut -d'|' -f2- || true
if [ "$status" -ne 0 ]; then
  echo "--- fault suite output ---"
  tail -n 200 "$log"
fi
# Leave the services running for whoever comes next.
scripts/services.sh
exit "$status"
