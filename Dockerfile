# syntax=docker/dockerfile:1
# One image with every Smart Prefetch binary (ingest, analyzer, warmer, prefetch); the compose
# file runs each service from it with its own command. Needs BuildKit (the default builder of
# Docker 23+ and of `docker compose`).
#
#   docker build -t smart-prefetch .
#   docker run --rm smart-prefetch ingest --help
#
# Dependencies are cached between builds in BuildKit cache mounts (the cargo registry and the
# target directory), so after the first build only the workspace's own crates recompile.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# librdkafka is compiled from source by rdkafka-sys (cmake, make, a C/C++ compiler); zlib is
# linked dynamically (the runtime image has libz1).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake make g++ zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p ingest -p analyzer -p warmer -p prefetch \
 && mkdir -p /out \
 && cp target/release/ingest target/release/analyzer target/release/warmer target/release/prefetch /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# libssl3 for librdkafka's TLS and SASL (linked to the system OpenSSL); ca-certificates for TLS
# upstreams and brokers configured by the operator; curl for the compose health checks. No tzdata: market time zones are compiled in (chrono-tz). The
# binaries carry no debug info (Cargo.toml's release profile), so the image's own layer is
# their size (BENCHMARKS.md, "Artifacts").
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libssl3 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/smart-prefetch --create-home smart-prefetch
COPY --from=build /out/ /usr/local/bin/
USER smart-prefetch
WORKDIR /var/lib/smart-prefetch
ENV PREFETCH_LOG_FORMAT=json
# ingest, analyzer admin, warmer admin, demo upstream
EXPOSE 8080 8081 8082 8000
CMD ["prefetch", "--help"]
