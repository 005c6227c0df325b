# syntax=docker/dockerfile:1
# The refold-proxy image: `docker build -t refold-proxy .` (BuildKit, the default builder).
# A Rust build stage, then a distroless run stage: glibc and CA roots for the binary
# (jemalloc and aws-lc link against glibc), no shell, no package manager, a non-root user.
# docs/operations.md, "Deploying on Kubernetes", has the reasoning; tests/it/deploy.rs
# holds this file to the binary (ports, user, stop signal, health check).

# The toolchain the project is developed and tested with; at least the workspace's
# rust-version and what Cargo.lock's dependencies need.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are BuildKit cache mounts: a rebuild after a source
# change recompiles the workspace's own crates, not the dependencies. The binary is copied
# out because a cache mount is not part of the image.
RUN --mount=type=cache,id=refold-proxy-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=refold-proxy-target,target=/src/target \
    cargo build --release --locked -p refold-proxy-cli \
    && cp target/release/refold-proxy /refold-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
# The default config (the repository's proxy.toml: public port 8080, admin listener on
# loopback 9901). Kubernetes mounts its ConfigMap over this directory instead.
COPY proxy.toml /etc/refold-proxy/proxy.toml
COPY --from=build /refold-proxy /usr/local/bin/refold-proxy
# distroless's `nonroot` user, by number so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# The public listener and the admin listener (health, readiness, metrics).
EXPOSE 8080 9901
# The proxy drains on SIGTERM (readiness turns 503, in-flight requests finish within
# server.shutdown_grace_s).
STOPSIGNAL SIGTERM
# No shell or curl in the image: the binary probes its own admin listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/refold-proxy", "healthcheck", "--url", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/usr/local/bin/refold-proxy"]
CMD ["--config", "/etc/refold-proxy/proxy.toml"]
