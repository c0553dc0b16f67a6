#!/usr/bin/env bash
# The cluster suite: brings up the three-node RabbitMQ 4.0 cluster (scripts/cluster.sh), then runs
# crates/clerk-sync-faults/tests/cluster one scenario at a time (they stop, kill and freeze nodes)
# with the real gateway and two workers given all three nodes. Prints one row per scenario and
# stops the cluster afterwards (CLERK_SYNC_KEEP_CLUSTER=1 leaves it up).
set -euo pipefail
cd "$(dirname "$0")/.."
export SQLX_OFFLINE=true
t0=$SECONDS
scripts/cluster.sh up
cargo build --locked --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The suite's own probes (queue counts, dead letters) go to node 1; the services get all three.
AMQP_URL='amqp://guest:guest@127.0.0.1:5681/%2f' \
  cargo nextest run --locked -p clerk-sync-faults --test cluster --run-ignored only --test-threads 1 \
  --no-capture --no-fail-fast >"$log" 2>&1 || status=$?
grep -E 'PASS|FAIL|panicked|assertion|Summary' "$log" || true
echo
echo "scenario | events in flight | longest run of 503s | lost | dead-lettered by the fault | detail"
grep '^CLUSTER |' "$log" | cut -d'|' -f2- || true
if [ "$status" -ne 0 ]; then
  echo "--- cluster suite output ---"
  tail -n 200 "$log"
fi
[ "${CLERK_SYNC_KEEP_CLUSTER:-0}" = 1 ] || scripts/cluster.sh down
echo "[test-cluster] $((SECONDS - t0)) s"
exit "$status"
