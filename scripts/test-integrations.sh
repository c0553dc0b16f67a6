#!/usr/bin/env bash
# Application-side integration checks (integrations/): the Prisma schema (validated offline with
# @prisma/prisma-schema-wasm), the Drizzle schema (type-checked with tsc, then queried) and the
# Supabase row-level security SQL, all against a database that the real clerk-sync worker filled from
# signed webhooks posted to the real gateway.
#
# 1. `npm ci` in integrations/ (lockfile committed) and `tsc`;
# 2. builds clerk-sync-gateway and clerk-sync-worker (debug; a no-op when they are up to date);
# 3. creates a fresh database and runs `clerk-sync-worker migrate`;
# 4. starts the worker and the gateway with a unique AMQP prefix, a random signing secret and free
#    ports, and waits for both /readyz;
# 5. runs the node:test suites, which post signed Clerk events and query what the worker wrote;
# 6. always cleans up: stops both processes, drops the database, deletes the prefix's queues and
#    exchanges, and drops the Supabase-like roles if this run created them.
#
# Needs node >= 20 and npm, PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and RabbitMQ on
# 127.0.0.1:5672 (guest/guest), as `make services` provides. Overrides: PG_ADMIN_URL, AMQP_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export SQLX_OFFLINE=true

log() { printf '[integrations] %s\n' "$*"; }
die() { printf '[integrations] error: %s\n' "$*" >&2; exit 1; }

for tool in node npm psql rabbitmqctl cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed (PostgreSQL and RabbitMQ: make services)"
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node >= 20 is needed, found $(node --version)"

PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
RUN_ID="$(date +%s)_$$_${RANDOM}"
DB="clerk_sync_integrations_${RUN_ID}"
DATABASE_URL="${PG_ADMIN_URL%/*}/${DB}"
PREFIX="clerk-sync-integrations-${RUN_ID}"
SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
WORK=$(mktemp -d -t clerk-sync-integrations.XXXXXX)
GATEWAY_PID=""
WORKER_PID=""
DB_CREATED=""
CREATED_ROLES=()

psql_admin() { psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -X -q -At "$@"; }

stop() {
  local name=$1 pid=$2
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop within 10s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  if [ "$status" -ne 0 ]; then
    for name in gateway worker; do
      if [ -s "$WORK/$name.log" ]; then
        log "last lines of the $name's log:"
        tail -n 40 "$WORK/$name.log" | sed "s/^/  [$name] /"
      fi
    done
  fi
  stop gateway "$GATEWAY_PID"
  stop worker "$WORKER_PID"
  if [ -n "$DB_CREATED" ]; then
    psql_admin -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" || log "could not drop database $DB"
  fi
  # Roles are cluster-wide: drop only the ones this run created (after the database that used them).
  for role in "${CREATED_ROLES[@]}"; do
    psql_admin -c "DROP ROLE IF EXISTS \"$role\"" 2>/dev/null || log "left role $role (still in use elsewhere)"
  done
  for suffix in sync dead retry.1s retry.10s retry.1m retry.10m; do
    rabbitmqctl -q delete_queue "$PREFIX.$suffix" >/dev/null 2>&1
  done
  # rabbitmqctl has no delete_exchange; the broker's own function does it (best effort).
  for exchange in "$PREFIX.events" "$PREFIX.dead"; do
    rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"clerk-sync-integrations\">>)." >/dev/null 2>&1
  done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() {
  # Binds N ephemeral ports at once, so they are distinct, then releases them for the services.
  node -e '
    const net = require("node:net");
    const n = Number(process.argv[1]);
    Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
      const s = net.createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => resolve(s));
    }))).then((servers) => {
      console.log(servers.map((s) => s.address().port).join(" "));
      servers.forEach((s) => s.close());
    });' "$1"
}

http_ok() {
  node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
    .then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))' "$1"
}

wait_ready() {
  local name=$1 pid=$2 url=$3
  local deadline=$((SECONDS + 90))
  until http_ok "$url"; do
    kill -0 "$pid" 2>/dev/null || die "$name exited before becoming ready"
    [ "$SECONDS" -lt "$deadline" ] || die "$name not ready after 90s ($url)"
    sleep 0.2
  done
  log "$name ready ($url)"
}

log "npm ci (integrations/)"
(cd integrations && npm ci --no-audit --no-fund --loglevel=error)
log "tsc: type-checking and compiling the Drizzle schema and the tests"
rm -rf integrations/dist
(cd integrations && npx --no-install tsc -p tsconfig.json)

# Cargo's own target directory, also when CARGO_TARGET_DIR moves it.
BIN_DIR="$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug"
GATEWAY_BIN="$BIN_DIR/clerk-sync-gateway"
WORKER_BIN="$BIN_DIR/clerk-sync-worker"
# `make test` has just built both (cargo test builds the binaries its tests run); build them here
# when they are missing or older than their sources, so a standalone run never tests stale code.
stale() {
  [ -x "$1" ] || return 0
  [ -n "$(find Cargo.toml Cargo.lock migrations crates/clerk-sync-core crates/clerk-sync-store \
    crates/clerk-sync-gateway crates/clerk-sync-worker -newer "$1" -type f -print -quit)" ]
}
if stale "$GATEWAY_BIN" || stale "$WORKER_BIN"; then
  log "building clerk-sync-gateway and clerk-sync-worker (cargo build --bins, debug)"
  cargo build --locked --bins -p clerk-sync-gateway -p clerk-sync-worker
fi
[ -x "$GATEWAY_BIN" ] && [ -x "$WORKER_BIN" ] || die "the binaries are missing from $BIN_DIR"

log "creating database $DB"
psql_admin -c "CREATE DATABASE \"$DB\""
DB_CREATED=1

# Supabase's roles, for the row-level security tests; kept if they already exist.
for role in anon authenticated service_role; do
  if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$role'")" ]; then
    attrs="NOLOGIN"
    [ "$role" = service_role ] && attrs="NOLOGIN BYPASSRLS"
    psql_admin -c "CREATE ROLE \"$role\" $attrs"
    CREATED_ROLES+=("$role")
  fi
done

read -r GATEWAY_PORT GATEWAY_ADMIN_PORT WORKER_ADMIN_PORT <<<"$(free_ports 3)"
export DATABASE_URL AMQP_URL
export CLERK_SYNC__AMQP__PREFIX="$PREFIX"
export CLERK_WEBHOOK_SIGNING_SECRET="$SECRET"
export CLERK_SYNC__GATEWAY__LISTEN="127.0.0.1:$GATEWAY_PORT"
export CLERK_SYNC__GATEWAY__ADMIN_LISTEN="127.0.0.1:$GATEWAY_ADMIN_PORT"
export CLERK_SYNC__WORKER__ADMIN_LISTEN="127.0.0.1:$WORKER_ADMIN_PORT"
export RUST_LOG=${RUST_LOG:-info}

log "clerk-sync-worker migrate"
# Run from the scratch directory so a developer's .env in the repository is not read.
(cd "$WORK" && "$WORKER_BIN" migrate)

log "starting the worker and the gateway (AMQP prefix $PREFIX)"
(cd "$WORK" && exec "$WORKER_BIN" run) >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
(cd "$WORK" && exec "$GATEWAY_BIN") >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
wait_ready gateway "$GATEWAY_PID" "http://127.0.0.1:$GATEWAY_ADMIN_PORT/readyz"
wait_ready worker "$WORKER_PID" "http://127.0.0.1:$WORKER_ADMIN_PORT/readyz"

log "running the node:test suites"
export INTEGRATIONS_WEBHOOK_URL="http://127.0.0.1:$GATEWAY_PORT/webhooks/clerk"
(cd integrations && node --test --test-reporter=spec --test-timeout=180000 dist/test/*.test.js)
log "all integration checks passed"
