#!/usr/bin/env bash
# Runs the clerk-sync processes in the foreground (Ctrl-C stops them all).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
if [ -x "$bin/clerk-sync-worker" ]; then
  "$bin/clerk-sync-worker" migrate
  "$bin/clerk-sync-worker" & pids+=($!)
fi
"$bin/clerk-sync-gateway" & pids+=($!)
echo "[run] gateway on http://127.0.0.1:8080/webhooks/clerk, admin on http://127.0.0.1:9091/metrics" >&2
wait -n "${pids[@]}"
