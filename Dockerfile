# syntax=docker/dockerfile:1
# The billing image. Build from the repository root:
#   docker build -t billing:v2.0 .
# The course's two tags (billing:v1.1 for task 1, billing:v2.0 for task 2) are built from this same file; what
# differs between the tasks is configuration (LOG_FILE), which the chart's values/task*.yaml set.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
# How mimalloc is compiled (transparent huge pages off): .cargo/config.toml.
COPY .cargo .cargo
COPY billing billing
COPY testkit testkit
# --locked: the image is built from exactly the dependency versions the tests ran with.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p billing \
    && cp target/release/billing /billing

# Distroless: glibc and libgcc for the dynamically linked binary, CA certificates, no package manager.
# The :debug-nonroot variant adds busybox (sh, cat, ls) under /busybox, because the course reads each pod's log
# with `kubectl exec billing-stateful-0 -- cat /var/log/app.log`; it runs as uid/gid 65532, which the chart's
# securityContext matches.
FROM gcr.io/distroless/cc-debian12:debug-nonroot
COPY --from=build /billing /usr/local/bin/billing
USER 65532:65532
EXPOSE 8080
# No curl or wget in the image: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["/usr/local/bin/billing", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/billing"]
CMD []
