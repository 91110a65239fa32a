# quiver-operator. Build from the repository root:
#   docker build -f images/operator.Dockerfile -t quiver-operator .
# The runtime image has no shell and no package manager; it runs as uid 65532 (the chart's
# runAsUser), and the binary needs only glibc and libgcc (TLS is rustls, with no OpenSSL).

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p quiver-operator --bin quiver-operator \
    && install -D -m 0755 target/release/quiver-operator /out/quiver-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/quiver-operator /usr/local/bin/quiver-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/quiver-operator"]
CMD ["run"]
