#!/usr/bin/env bash
# RabbitMQ 4.0 on this machine, beside (never instead of) the host's RabbitMQ on 5672:
#   up | down | status        a three-node cluster r1,r2,r3@localhost on AMQP ports 5681, 5682, 5683
#   single-up | single-down   one standalone node s0@localhost on AMQP port 5680
#   stop N | start N          stop a cluster node cleanly / start it again (rejoins by itself)
#   kill N | freeze N | thaw N  SIGKILL / SIGSTOP / SIGCONT a cluster node's Erlang VM
#   pid N | ctl N ARGS...     the node's VM pid / rabbitmqctl against node N (0 = the single node)
#   leader QUEUE              the cluster node number (1-3) leading a quorum queue
#   await-quorum N            wait until stopping node N leaves every quorum queue a majority
# Every command is idempotent: `up` on a running cluster only checks it, `down` on a stopped one
# does nothing.
#
# The broker comes from Debian 13 (trixie), whose archive has rabbitmq-server 4.0.5 with Erlang 27:
# a minbase root made once with debootstrap and cached OUTSIDE the clone (CLERK_SYNC_RABBITMQ4_ROOT,
# default /var/cache/clerk-sync/rabbitmq4-trixie), so CI builds it once per machine. The nodes run
# chrooted into it, as its own `rabbitmq` user (whose uid differs from the host's), with /proc and
# /dev bind-mounted. Each group has its own epmd port (cluster 4391, single 4392), so the Erlang
# nodes never meet the host's 3.10 node on 4369.
#
# Test-cluster settings (the fault suites depend on them):
#   consumer_timeout = 10000 ms   a channel with a delivery unacked for 10 s is closed by the broker
#                                 (scenario 5: a database outage longer than consumer_timeout)
#   AMQP 5681-5683 (cluster), 5680 (single); dist 25681-25683, 25680; guest/guest on loopback.
# State (mnesia, logs, pid files) lives in the root under /srv/clerk-sync/<node>; `down` and
# `single-down` delete it, so every `up` starts an empty broker.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${CLERK_SYNC_RABBITMQ4_ROOT:-/var/cache/clerk-sync/rabbitmq4-trixie}
MIRROR=${CLERK_SYNC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CONSUMER_TIMEOUT_MS=10000
CLUSTER_EPMD=4391
SINGLE_EPMD=4392
STATE=/srv/clerk-sync   # inside the root
HOME_IN_ROOT=/var/lib/rabbitmq

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mounts)"

node_name() { if [ "$1" = 0 ]; then echo s0@localhost; else echo "r$1@localhost"; fi; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }
epmd_port() { if [ "$1" = 0 ]; then echo $SINGLE_EPMD; else echo $CLUSTER_EPMD; fi; }
node_dir() { echo "$STATE/$(node_name "$1" | cut -d@ -f1)"; }

# --- the root -------------------------------------------------------------------------------------
ensure_root() {
  if [ -f "$ROOT/.clerk-sync-ready" ]; then return 0; fi
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  local tmp="$ROOT.tmp.$$"
  log "building the RabbitMQ 4 root in $ROOT (debootstrap trixie; once per machine)"
  mkdir -p "$(dirname "$ROOT")"
  rm -rf "$tmp"
  debootstrap --variant=minbase --include=rabbitmq-server trixie "$tmp" "$MIRROR" >"$tmp.log" 2>&1 \
    || { tail -20 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
  # Installing the package inside a chroot starts nothing (no init): only the files are needed.
  grep -q '127.0.0.1.*localhost' "$tmp/etc/hosts" 2>/dev/null || echo '127.0.0.1 localhost' >>"$tmp/etc/hosts"
  rm -rf "$ROOT" && mv "$tmp" "$ROOT" && rm -f "$tmp.log"
  touch "$ROOT/.clerk-sync-ready"
}

ensure_mounts() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
}

release_mounts() {
  # Only once no node of either group runs inside the root.
  local n
  for n in 0 1 2 3; do running "$n" && return 0; done
  if epmd_running "$CLUSTER_EPMD" || epmd_running "$SINGLE_EPMD"; then return 0; fi
  mountpoint -q "$ROOT/dev" && umount "$ROOT/dev"
  mountpoint -q "$ROOT/proc" && umount "$ROOT/proc"
  return 0
}

rabbit_ids() { awk -F: '$1=="rabbitmq"{print $3":"$4}' "$ROOT/etc/passwd"; }

# Runs a command inside the root as its rabbitmq user, with the node's environment.
in_root() {
  local n=$1; shift
  chroot --userspec="$(rabbit_ids)" "$ROOT" /usr/bin/env -i \
    HOME=$HOME_IN_ROOT PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    ERL_EPMD_PORT="$(epmd_port "$n")" \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_MNESIA_BASE="$(node_dir "$n")/mnesia" \
    RABBITMQ_LOG_BASE="$(node_dir "$n")/log" \
    RABBITMQ_PID_FILE="$(node_dir "$n")/node.pid" \
    RABBITMQ_CONFIG_FILE="$(node_dir "$n")/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$(node_dir "$n")/enabled_plugins" \
    "$@"
}

ctl() { local n=$1; shift; in_root "$n" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$(node_name "$n")" "$@"; }

vm_pid() {
  local f; f="$ROOT$(node_dir "$1")/node.pid"
  [ -s "$f" ] && cat "$f"
}
running() {
  local pid; pid=$(vm_pid "$1" 2>/dev/null) || return 1
  # A pid file left by a VM that died with its machine may name another process by now.
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q beam "/proc/$pid/cmdline" 2>/dev/null
}
epmd_pidfile() { echo "$ROOT$STATE/epmd-$1.pid"; }
epmd_running() {
  local f; f=$(epmd_pidfile "$1")
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && grep -q epmd "/proc/$(cat "$f")/cmdline" 2>/dev/null
}

ensure_epmd() {
  local port=$1
  epmd_running "$port" && return 0
  mkdir -p "$ROOT$STATE"
  # chroot and env exec, so $! is epmd itself: `down` stops exactly this process.
  setsid chroot --userspec="$(rabbit_ids)" "$ROOT" /usr/bin/env -i HOME=$HOME_IN_ROOT \
    /usr/bin/epmd -port "$port" </dev/null >/dev/null 2>&1 &
  echo $! >"$(epmd_pidfile "$port")"
  for _ in $(seq 1 50); do port_open "$port" && return 0; sleep 0.1; done
  die "epmd did not open port $port"
}

stop_epmd() {
  local f; f=$(epmd_pidfile "$1")
  if epmd_running "$1"; then kill "$(cat "$f")" 2>/dev/null || true; fi
  rm -f "$f"
}

prepare_node() {
  local n=$1 dir; dir="$ROOT$(node_dir "$1")"
  mkdir -p "$dir/mnesia" "$dir/log"
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = $(amqp_port "$n")
loopback_users = none
consumer_timeout = $CONSUMER_TIMEOUT_MS
# Two cores for three nodes and the services: keep each VM small and quiet.
vm_memory_high_watermark.absolute = 1GiB
disk_free_limit.absolute = 200MB
log.console = false
log.file.level = info
EOF
  echo '[].' >"$dir/enabled_plugins"
  # The same cookie for every node and CLI call: they all share the rabbitmq user's HOME.
  local cookie="$ROOT$HOME_IN_ROOT/.erlang.cookie"
  mkdir -p "$ROOT$HOME_IN_ROOT"
  [ -s "$cookie" ] || head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cookie"
  chroot "$ROOT" chown -R rabbitmq:rabbitmq "$HOME_IN_ROOT" "$(node_dir "$n")"
  chmod 400 "$cookie"
}

start_node() {
  local n=$1
  running "$n" && return 0
  prepare_node "$n"
  ensure_epmd "$(epmd_port "$n")"
  log "starting $(node_name "$n") (AMQP $(amqp_port "$n"))"
  # Its own session, so the node outlives this script and a terminal's signals.
  setsid "$0" __serve "$n" </dev/null >>"$ROOT$(node_dir "$n")/log/console.log" 2>&1 &
}

await_node() {
  local n=$1
  # await_startup fails at once while the VM has not yet registered with epmd: poll until it can
  # wait, up to two minutes in all.
  local deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    ctl "$n" await_startup --timeout 120 >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  tail -30 "$ROOT$(node_dir "$n")/log/console.log" >&2 || true
  die "$(node_name "$n") did not start"
}

stop_node() {
  local n=$1 pid
  running "$n" || return 0
  pid=$(vm_pid "$n")
  log "stopping $(node_name "$n")"
  ctl "$n" stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

signal_node() {
  local n=$1 sig=$2 pid
  pid=$(vm_pid "$n") || die "$(node_name "$n") is not running"
  kill -"$sig" "$pid"
}

member_count() { ctl 1 cluster_status --formatter json 2>/dev/null | grep -o '"running_nodes":\[[^]]*\]' | grep -o '@localhost' | wc -l; }

cluster_up() {
  local t0=$SECONDS cold=warm
  [ -f "$ROOT/.clerk-sync-ready" ] || cold=cold
  ensure_root
  ensure_mounts
  local n
  for n in 1 2 3; do start_node "$n"; done
  for n in 1 2 3; do await_node "$n"; done
  for n in 2 3; do
    if ! ctl "$n" cluster_status --formatter json 2>/dev/null | grep -q 'r1@localhost'; then
      log "joining $(node_name "$n") to r1@localhost"
      ctl "$n" stop_app >/dev/null
      ctl "$n" join_cluster r1@localhost >/dev/null
      ctl "$n" start_app >/dev/null
    fi
  done
  local members; members=$(member_count)
  [ "$members" -ge 3 ] || die "the cluster has $members running node(s), expected 3"
  log "cluster up: r1,r2,r3@localhost on AMQP 5681,5682,5683 ($cold start, $((SECONDS - t0)) s)"
}

cluster_down() {
  local n
  for n in 3 2 1; do stop_node "$n"; done
  stop_epmd "$CLUSTER_EPMD"
  for n in 1 2 3; do rm -rf "${ROOT:?}$(node_dir "$n")"; done
  release_mounts
  log "cluster down"
}

single_up() {
  local t0=$SECONDS cold=warm
  [ -f "$ROOT/.clerk-sync-ready" ] || cold=cold
  ensure_root
  ensure_mounts
  start_node 0
  await_node 0
  log "single node up: s0@localhost on AMQP 5680 ($cold start, $((SECONDS - t0)) s)"
}

single_down() {
  stop_node 0
  stop_epmd "$SINGLE_EPMD"
  rm -rf "${ROOT:?}$(node_dir 0)"
  release_mounts
  log "single node down"
}

status() {
  local n
  for n in 0 1 2 3; do
    if running "$n"; then
      echo "$(node_name "$n") running (pid $(vm_pid "$n"), AMQP $(amqp_port "$n"))"
    else
      echo "$(node_name "$n") stopped"
    fi
  done
  if running 1; then
    echo "running members: $(ctl 1 cluster_status --formatter json 2>/dev/null | grep -o '"running_nodes":\[[^]]*\]' | grep -o 'r[0-9]@localhost' | tr '\n' ' ')"
  fi
}

# The node number whose Erlang node leads quorum queue $1, asked of any running cluster node.
leader() {
  local q=$1 n line
  for n in 1 2 3; do
    running "$n" || continue
    line=$(ctl "$n" list_queues -q --no-table-headers name leader 2>/dev/null | awk -v q="$q" '$1==q{print $2}') || continue
    [ -n "$line" ] || continue
    echo "$line" | sed -E 's/^r([0-9])@.*/\1/'
    return 0
  done
  die "no running node knows queue $q"
}

need_node() { [[ ${1:-} =~ ^[0-3]$ ]] || die "usage: $0 $2 N (N = 1, 2, 3; 0 for the single node)"; }

cmd=${1:-}
shift || true
case "$cmd" in
  up) cluster_up ;;
  down) cluster_down ;;
  status) status ;;
  single-up) single_up ;;
  single-down) single_down ;;
  stop) need_node "${1:-}" stop; stop_node "$1" ;;
  start) need_node "${1:-}" start; ensure_mounts; start_node "$1"; await_node "$1" ;;
  kill) need_node "${1:-}" kill; signal_node "$1" KILL ;;
  freeze) need_node "${1:-}" freeze; signal_node "$1" STOP ;;
  thaw) need_node "${1:-}" thaw; signal_node "$1" CONT ;;
  pid) need_node "${1:-}" pid; vm_pid "$1" ;;
  ctl) need_node "${1:-}" ctl; n=$1; shift; ctl "$n" "$@" ;;
  __serve) in_root "$1" /usr/lib/rabbitmq/bin/rabbitmq-server ;;
  await-quorum) need_node "${1:-}" await-quorum
    in_root "$1" /usr/lib/rabbitmq/bin/rabbitmq-upgrade -n "$(node_name "$1")" await_online_quorum_plus_one -t 120 >/dev/null ;;
  leader) [ -n "${1:-}" ] || die "usage: $0 leader QUEUE"; leader "$1" ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
