# syntax=docker/dockerfile:1.7
# clerk-sync: one image with the three binaries (clerk-sync-gateway, clerk-sync-worker and the
# operator CLI clerk-sync). Pick the process with the command, e.g. `docker run IMAGE clerk-sync-worker`.
#
#   docker build -t clerk-sync .
#
# Stages: `chef` (the toolchain plus cargo-chef), `planner` (the dependency recipe), `build`
# (dependencies in their own layer, rebuilt only when Cargo.toml/Cargo.lock change; then the
# workspace) and the final stage: Debian slim with the binaries, a CA bundle and a non-root user;
# no compiler, no package manager run, no curl. Build and runtime use the same Debian release so the
# binaries find the glibc they were linked against.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src
# No live database at build time: sqlx macros use their offline data, as in CI.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# The patched sqlx-core (see vendor/README.md) is a dependency, so it must be there for the cook.
COPY vendor vendor
# The dependency layer: cached until the recipe (manifests and lock file) changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json \
      -p clerk-sync-gateway -p clerk-sync-worker -p clerk-sync-cli --bins
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked -p clerk-sync-gateway -p clerk-sync-worker -p clerk-sync-cli --bins \
    && mkdir -p /out \
    && cp target/release/clerk-sync-gateway target/release/clerk-sync-worker target/release/clerk-sync /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="clerk-sync" \
      org.opencontainers.image.description="Keeps Postgres in sync with Clerk from Svix-signed webhooks: gateway, worker and operator CLI." \
      org.opencontainers.image.source="https://github.com/clerk-sync/clerk-sync" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"
# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot without a user name lookup.
RUN groupadd --system --gid 10001 clerk-sync \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin clerk-sync
# CA roots for amqps://, TLS to Postgres and Clerk's Backend API (backfill), from the build image's
# ca-certificates package: no apt run in this stage.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ /usr/local/bin/
COPY --chmod=0755 deploy/docker/healthcheck /usr/local/bin/clerk-sync-healthcheck
# Containers listen on every interface; the defaults in the binaries (127.0.0.1) suit a laptop.
# Keep the admin ports (9091, 9092) off public networks: see deploy/k8s/base/networkpolicy.yaml.
ENV CLERK_SYNC__GATEWAY__LISTEN=0.0.0.0:8080 \
    CLERK_SYNC__GATEWAY__ADMIN_LISTEN=0.0.0.0:9091 \
    CLERK_SYNC__WORKER__ADMIN_LISTEN=0.0.0.0:9092 \
    CLERK_SYNC__LOG__FORMAT=json \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# An empty working directory: the binaries read a .env from it if present, and there is none.
WORKDIR /app
USER 10001:10001
EXPOSE 8080 9091 9092
# For plain `docker run` and compose: /healthz on whichever admin port answers. Kubernetes ignores
# it and uses the httpGet probes of deploy/k8s (liveness /healthz, readiness /readyz).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/clerk-sync-healthcheck"]
# SIGTERM drains: the gateway finishes in-flight requests, the worker the batches in hand (30 s each).
STOPSIGNAL SIGTERM
CMD ["clerk-sync-gateway"]
