# One image for every Drover role: `drover operator` and `drover monitor` (the sidecar the
# operator puts into every serving pod; the Helm chart passes this image as --monitor-image).
#
#   docker build -t ghcr.io/drover-dev/drover:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/drover:TAG --push .
#
# Build stage: Debian bookworm's glibc, the same as the runtime's, so the binary links against
# what it runs on. ring (TLS) needs the C compiler the image has.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
# Dependencies first, so source edits do not rebuild them: the manifest, the benches it names
# (cargo reads every declared target), and empty crate roots.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && : > src/lib.rs \
    && cargo build --release --locked --bin drover \
    && rm -rf src
COPY src ./src
# The real sources are older than the stub's build outputs: touch them so cargo rebuilds.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin drover \
    && ./target/release/drover --version

# distroless/cc: glibc, libgcc and CA certificates; no shell, no package manager; uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="drover" \
      org.opencontainers.image.description="Drover: Kubernetes operator and monitor sidecar for machine-learning models" \
      org.opencontainers.image.source="https://github.com/drover-dev/drover" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/drover /usr/local/bin/drover
USER 65532:65532
# Fewer glibc arenas: a smaller resident set for both the operator and the monitor.
ENV MALLOC_ARENA_MAX=2
ENTRYPOINT ["/usr/local/bin/drover"]
CMD ["operator"]
