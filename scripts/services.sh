#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) are running locally.
# Order of preference: already running; a local install (start it); Docker (compose up);
# Debian/Ubuntu without either (apt-get install, then start). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[services] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
have_docker() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 120); do port_open "$port" && return 0; sleep 0.5; done
  log "$name did not open port $port"; return 1
}

apt_install() {
  command -v apt-get >/dev/null || { log "cannot install $*: no apt-get; install it yourself or use Docker"; exit 1; }
  log "installing $* with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if port_open 5432; then return 0; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1 && have_docker; then
    log "starting postgres with docker compose"; docker compose up -d postgres; wait_port 5432 PostgreSQL; return
  fi
  ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
  local version; version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 PostgreSQL
  # Local development trusts loopback connections for the postgres user, as CI does.
  local hba; hba=$(ls /etc/postgresql/"$version"/main/pg_hba.conf)
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    log "allowing trust auth on 127.0.0.1 for local development ($hba)"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
}

ensure_rabbitmq() {
  if port_open 5672; then return 0; fi
  if ! command -v rabbitmq-server >/dev/null && have_docker; then
    log "starting rabbitmq with docker compose"; docker compose up -d rabbitmq; wait_port 5672 RabbitMQ; return
  fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
  as_root rabbitmqctl await_startup --timeout 120 >/dev/null
  wait_port 5672 RabbitMQ
}

ensure_postgres
ensure_rabbitmq
log "PostgreSQL and RabbitMQ are up"
