# syntax=docker/dockerfile:1.7
#
# grantbridge container image.
#
#   docker build -t grantbridge:0.1.0 .
#   docker run --read-only -v grantbridge-journal:/var/lib/grantbridge \
#     -v "$PWD/grantbridge.toml:/etc/grantbridge/grantbridge.toml:ro" grantbridge:0.1.0
#
# Two stages: a Rust builder (cargo caches in BuildKit cache mounts, so they
# never end up in a layer) and a distroless runtime that holds only the binary.
# The binary is built with --no-default-features: it has no `demo` or
# `sandbox` command and links none of the sandbox crate (no fake token issuer).
# gcr.io/distroless/cc-debian12 has glibc, libgcc and the Debian CA bundle,
# which is all the binary needs: SQLite is compiled in (rusqlite "bundled"),
# TLS is rustls (aws-lc-rs, compiled in) with the platform verifier, which
# reads the system CA store at /etc/ssl/certs. The builder is bookworm too, so
# the binary never needs a newer glibc than the runtime has (2.36).
#
# Runs as uid/gid 65532 ("nonroot"), needs no capability, and works with a
# read-only root filesystem: the only path it writes is the journal directory
# /var/lib/grantbridge (a volume). See docs/deployment.md.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The whole workspace: Cargo.toml declares benches and the test harness, and
# cargo refuses a manifest whose declared targets are missing; the sandbox
# crate is a workspace member, so cargo reads its manifest too. .dockerignore
# keeps target/, .git and the deployment files out of the context.
COPY . .
# target/ lives in a cache mount, so the binary is copied out of it in the
# same RUN. The journal directory is created here because the runtime image
# has no shell to create it with.
RUN --mount=type=cache,id=grantbridge-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=grantbridge-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=grantbridge-target,target=/src/target,sharing=locked \
    cargo build --release --locked --no-default-features --bin grantbridge \
 && install -D -m 0755 target/release/grantbridge /out/usr/local/bin/grantbridge \
 && install -d -m 0750 /out/var/lib/grantbridge \
 && install -d -m 0755 /out/etc/grantbridge

# ---------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="grantbridge" \
      org.opencontainers.image.description="On-prem connector that invokes Google Cloud Functions with Google-signed ID tokens on behalf of an access-management control plane" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot" \
      org.opencontainers.image.documentation="docs/deployment.md"

COPY --from=builder --chown=0:0 /out/usr/local/bin/grantbridge /usr/local/bin/grantbridge
COPY --from=builder --chown=0:0 /out/etc/grantbridge /etc/grantbridge
COPY --from=builder --chown=65532:65532 /out/var/lib/grantbridge /var/lib/grantbridge

# 65532 is distroless's "nonroot"; numeric so Kubernetes' runAsNonRoot can
# verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /var/lib/grantbridge
# The journal (SQLite). Declared as a volume so `docker run --read-only`
# without -v still gets a writable (anonymous) volume; name it with -v to keep
# the journal across containers. Each running instance needs its own.
VOLUME ["/var/lib/grantbridge"]

ENV GRANTBRIDGE_CONFIG=/etc/grantbridge/grantbridge.toml

# 9090: admin listener (/healthz, /readyz, /metrics); set [admin] listen =
#       "0.0.0.0:9090" in a container. 8443: push mode (plain HTTP, TLS in front).
EXPOSE 9090 8443

# The image has no curl or shell: the binary probes its own /healthz
# (http://127.0.0.1:9090/healthz by default) and exits 0 on a 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/grantbridge", "health"]

# SIGTERM (docker stop, Kubernetes) drains for engine.shutdown_grace (30s by
# default): give `docker stop -t 45` / terminationGracePeriodSeconds more.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/grantbridge"]
CMD ["run", "--config", "/etc/grantbridge/grantbridge.toml", "--log-format", "json"]
