# Weir's container image: `docker build -t weir:0.1.0 .` (or `podman build`).
# docs/operations.md#container says how to run it, mount a config and plugins, and
# which ports and variables it uses.

# --- Build: the gateway and the first-party plugins, with the project's toolchain. ---
FROM rust:1.95-bookworm AS build

# rust-toolchain.toml asks for `stable`; pin the image's own 1.95.0 instead, so the
# build neither downloads another toolchain nor drifts from the tag above.
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TERM_COLOR=never
RUN rustup target add wasm32-wasip2

WORKDIR /src
COPY . .

# `cargo xtask plugins` installs the guests' component linker, builds `plugins/` for
# wasm32-wasip2 and copies each as NAME.wasm; the gateway's build embeds two of them
# for the quickstart.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo xtask plugins /out/plugins \
    && cargo build --release --locked --bin weir \
    && cp target/release/weir /out/weir

# --- Runtime: glibc and CA certificates, no shell, no package manager. ---
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/weir /usr/local/bin/weir
COPY --from=build /out/plugins/ /etc/weir/plugins/
COPY container/weir.toml /etc/weir/weir.toml

# The config path `weir run` reads (a `--config` flag wins over it). The default config
# wants WEIR_ADMIN_TOKEN for its admin listener: pass it at `docker run -e`.
ENV WEIR_CONFIG=/etc/weir/weir.toml

# 65532, distroless' `nonroot`, as examples/kubernetes/deployment.yaml expects.
USER 65532:65532

# Traffic, then the admin listener (/healthz, /readyz, /metrics, the admin API).
EXPOSE 8080 9901

# No HEALTHCHECK: the image has no shell or HTTP client to run one. The orchestrator's
# probes are the health check: liveness GET :9901/healthz, readiness GET :9901/readyz.

# Logs go to stdout; add `--log-format json` to `docker run IMAGE` for JSON lines.
ENTRYPOINT ["/usr/local/bin/weir", "run"]
