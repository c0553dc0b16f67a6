# syntax=docker/dockerfile:1
# Multi-stage: dependencies are built in their own cached layer; the final image holds only the
# binaries, runs as a non-root user and has no build tools.
FROM rust:1-bookworm AS build
WORKDIR /src
ENV SQLX_OFFLINE=true
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins && \
    mkdir -p /out && find target/release -maxdepth 1 -type f -perm -u+x -name 'clerk-sync*' -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home clerk-sync
COPY --from=build /out/ /usr/local/bin/
USER 10001
EXPOSE 8080 9091 9092
# Probes belong to the orchestrator; this one serves plain `docker run`.
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS http://127.0.0.1:9091/healthz || curl -fsS http://127.0.0.1:9092/healthz || exit 1
CMD ["clerk-sync-gateway"]
