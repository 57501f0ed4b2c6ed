# Multi-stage build: a release binary, then a small Debian runtime with CA roots
# (for https receivers) and a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# async-nats, patched (vendor/async-nats/README.natshook.md).
COPY vendor ./vendor
COPY examples ./examples
# Declared in Cargo.toml, so the manifest needs it even for --bin builds.
COPY benches ./benches
COPY scripts/build-release.sh ./scripts/
# The shipped build: release profile, glibc linked statically (smaller idle RSS,
# no dependence on the runtime image's libc).
RUN cp "$(./scripts/build-release.sh --locked)" /natshook

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home natshook
COPY --from=build /natshook /usr/local/bin/natshook
COPY config/natshook.example.toml /etc/natshook/natshook.example.toml
USER 10001
EXPOSE 9464
ENTRYPOINT ["natshook"]
CMD ["run", "--config", "/etc/natshook/natshook.toml"]
