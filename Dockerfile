# syntax=docker/dockerfile:1
# keyturn's container image: the `keyturn` binary on distroless, as a non-root user.
# Build from the repository root:  docker build -t keyturn .
# The scheduled runner (deploy/runner.yaml) runs it as `keyturn run CAMPAIGN`.

# Build with the toolchain pinned in rust-toolchain.toml (1.95.0; the e2e_deploy test
# checks that the two agree), on the Debian release the runtime image is built from
# (bookworm), so the binary links the same glibc.
FROM rust:1.95.0-slim-bookworm AS build
# cmake: aws-lc-sys (the SDK's TLS crypto) falls back to it on some platforms. The
# components named by rust-toolchain.toml, which rustup would otherwise fetch on first use.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/* \
 && rustup component add rustfmt clippy
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock. The cache mounts keep the
# registry and the build between builds; the binary is copied out of the cached target.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p keyturn-cli --bin keyturn \
 && cp target/release/keyturn /keyturn

# Runtime: glibc, libgcc, CA certificates and tzdata, no shell, no package manager;
# the `nonroot` variant runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /keyturn /usr/local/bin/keyturn
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/keyturn"]
CMD ["--help"]
