#!/usr/bin/env bash
# The gateway, worker and CLI integration tests once more, against a single RabbitMQ 4.0 node
# (scripts/cluster.sh single-up: 127.0.0.1:5680), as production runs 4.x while `make test` uses
# the local 3.10. Tests that call rabbitmqctl find the node's own (scripts/cluster.sh ctl 0) from
# AMQP_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
export SQLX_OFFLINE=true
t0=$SECONDS
scripts/cluster.sh single-up
status=0
AMQP_URL='amqp://guest:guest@127.0.0.1:5680/%2f' \
  cargo nextest run --locked -p clerk-sync-gateway -p clerk-sync-worker -p clerk-sync-cli --no-fail-fast || status=$?
[ "${CLERK_SYNC_KEEP_CLUSTER:-0}" = 1 ] || scripts/cluster.sh single-down
echo "[test-rabbitmq4] $((SECONDS - t0)) s"
exit "$status"
