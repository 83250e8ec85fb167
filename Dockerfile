# ccsync container images.
#
#   docker build -t ccsync .                  # the worker (default target, last stage)
#   docker build --target sim -t ccsync-sim . # the local Constant Contact simulator (compose.yaml)
#
# The worker image is built with `--no-default-features`: the simulator (feature `sim`, with its
# YAML and JSON-schema dependencies) stays out of production. config/default.toml is compiled into
# the binary, so the image needs no configuration file: everything comes from CCSYNC_* variables.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- dependency cache ---------------------------------------------------------------------------
# Only the manifests: this layer (and the dependency builds below it) is reused until Cargo.toml or
# Cargo.lock changes, so a code change rebuilds ccsync alone.
FROM ${RUST_IMAGE} AS deps
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY sim/Cargo.toml ./sim/
COPY bench/Cargo.toml ./bench/
COPY kit/Cargo.toml ./kit/
COPY kit-base/Cargo.toml ./kit-base/
# Stand-in sources so `cargo build` can compile every dependency without the real code: the
# product (`src/`) and the workspace's simulator, bench and test-kit crates (`sim/`, `bench/`,
# `kit/`, `kit-base/`: `-p ccsync` builds only the simulator and kit-base, for the simulator
# image, but cargo reads every member's targets). (If a Cargo.toml ever declares
# explicit [[bench]]/[[test]]/[[example]] targets, copy or stub their files here too: cargo checks
# that declared target files exist.)
RUN mkdir -p src sim/src bench/src kit/src kit-base/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && touch src/lib.rs sim/src/lib.rs bench/src/lib.rs kit/src/lib.rs kit-base/src/lib.rs

# ---- worker build (no simulator) ---------------------------------------------------------------
FROM deps AS build-worker
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --no-default-features -p ccsync \
    && rm -rf src target/release/ccsync target/release/deps/*ccsync* target/release/.fingerprint/ccsync-*
COPY config ./config
COPY src ./src
# COPY keeps the files' timestamps, which may be older than the stand-in build: touch them so cargo
# rebuilds the crate itself.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    touch src/main.rs src/lib.rs \
    && cargo build --release --locked --no-default-features -p ccsync \
    && install -m 0755 target/release/ccsync /usr/local/bin/ccsync

# ---- simulator build (default features) -------------------------------------------------------
FROM deps AS build-sim
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked -p ccsync \
    && rm -rf src sim/src kit-base/src target/release/ccsync target/release/deps/*ccsync* target/release/.fingerprint/ccsync-*
COPY config ./config
COPY reference ./reference
COPY src ./src
COPY sim/src ./sim/src
COPY kit-base/src ./kit-base/src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    touch src/main.rs src/lib.rs sim/src/lib.rs kit-base/src/lib.rs \
    && cargo build --release --locked -p ccsync \
    && install -m 0755 target/release/ccsync /usr/local/bin/ccsync

# ---- runtime base ------------------------------------------------------------------------------
# ca-certificates: rustls-platform-verifier reads the operating system's trust store for TLS to
# Constant Contact, amqps:// and rediss://.
# Not version-pinned on purpose: the trust store must follow Debian's security updates.
FROM ${RUNTIME_IMAGE} AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ccsync \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin ccsync
WORKDIR /
ENV CCSYNC_METRICS_ADDR=0.0.0.0:9464 \
    CCSYNC_LOG_FORMAT=json

# ---- simulator image (local stack and demos only) ---------------------------------------------
FROM runtime AS sim
COPY --from=build-sim /usr/local/bin/ccsync /usr/local/bin/ccsync
USER 10001:10001
EXPOSE 8089
ENTRYPOINT ["/usr/local/bin/ccsync"]
CMD ["sim", "--auto-approve"]

# ---- worker image (default target) ------------------------------------------------------------
FROM runtime AS worker
COPY --from=build-worker /usr/local/bin/ccsync /usr/local/bin/ccsync
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# /metrics, /healthz, /readyz (CCSYNC_METRICS_ADDR).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/ccsync"]
CMD ["worker"]
