#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test against the local services, then the
# deployment checks and the application-side integration checks.
set -euo pipefail
cd "$(dirname "$0")/.."
export SQLX_OFFLINE=true
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi
# Static validation of deploy/ (compose, Kubernetes, Prometheus rules, dashboard).
if [ -x scripts/test-deploy.sh ]; then scripts/test-deploy.sh; fi
# Prisma / Drizzle / Supabase integrations against a database the worker filled.
if [ -x scripts/test-integrations.sh ]; then scripts/test-integrations.sh; fi
