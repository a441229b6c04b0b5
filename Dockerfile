# One image for every Drover role: `drover operator`, and later `drover monitor` (the sidecar).
# Build: docker build -t ghcr.io/drover-dev/drover:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/builders.rs && echo 'fn main() {}' > benches/operator_memory.rs \
    && cargo build --release --locked --bin drover && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin drover \
    && strip target/release/drover

# distroless/cc: glibc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/drover /usr/local/bin/drover
USER 65532:65532
# Fewer glibc arenas: a smaller resident set for both the operator and the monitor.
ENV MALLOC_ARENA_MAX=2
ENTRYPOINT ["/usr/local/bin/drover"]
CMD ["operator"]
