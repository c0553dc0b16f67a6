# clerk-sync: the commands you need. `make help` lists them.
SHELL := /bin/bash
export SQLX_OFFLINE := true

.PHONY: help services run test test-faults test-deploy test-integrations lint build bench bench-cluster bench-soak migrate up down image \
	cluster-up cluster-down test-cluster test-rabbitmq4

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

services: ## make sure PostgreSQL and RabbitMQ run locally (installs them on Debian/Ubuntu if missing)
	@scripts/services.sh

.env:
	@scripts/dev-env.sh

run: services ## build and run the service locally (generates a dev signing secret into .env)
	@scripts/dev-env.sh
	cargo build --release --bins
	@scripts/run.sh

test: services ## fmt check, clippy -D warnings, and every test against the local services
	@scripts/test.sh

test-faults: services ## the fault suite (restarts RabbitMQ and Postgres under load; serial; CI runs it after make test)
	@scripts/test-faults.sh

cluster-up: ## a three-node RabbitMQ 4.0 cluster on 127.0.0.1:5681-5683 (chrooted Debian 13 root, cached in /var/cache/clerk-sync)
	@scripts/cluster.sh up

cluster-down: ## stop the RabbitMQ 4.0 cluster and delete its state
	@scripts/cluster.sh down

test-cluster: services ## node faults under load on the RabbitMQ 4.0 cluster (stops, kills, freezes nodes; serial; CI runs it after test-faults)
	@scripts/test-cluster.sh

test-rabbitmq4: services ## the gateway, worker and CLI integration tests against a single RabbitMQ 4.0 node (127.0.0.1:5680)
	@scripts/test-rabbitmq4.sh

test-deploy: ## validate deploy/ and docker-compose.yml offline (installs promtool and validators if missing)
	@scripts/test-deploy.sh

test-integrations: services ## Prisma, Drizzle and Supabase checks against a database filled by the worker
	@scripts/test-integrations.sh

lint: ## fmt check and clippy only
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

build: ## release build of every binary
	cargo build --release --bins

bench: services ## benchmarks against the local RabbitMQ and Postgres; prints a table, writes target/bench/*.json
	cargo run --release --locked -p clerk-sync-bench -- all

bench-cluster: services ## the gateway and one worker on a three-node RabbitMQ 4.0 cluster beside a single 4.0 node (starts them)
	scripts/cluster.sh up
	scripts/cluster.sh single-up
	cargo run --release --locked -p clerk-sync-bench -- cluster

bench-soak: services ## the memory soak: gateway and worker at half capacity for several minutes; prints RSS over time
	cargo run --release --locked -p clerk-sync-bench -- soak

up: ## the whole stack with docker compose
	docker compose up -d --build

down: ## stop the compose stack
	docker compose down
