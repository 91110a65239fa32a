# quiver-agent with QEMU. Build from the repository root:
#   docker build -f images/agent.Dockerfile -t quiver-agent .
# QEMU comes from Debian 12's packages: qemu-system-x86 (qemu-system-x86_64) and qemu-utils
# (qemu-img) from one source version, as scripts/lib/qemu-packages.sh requires; a clean Debian 12
# image has no newer qemu-utils, so no pinning is needed here. The agent runs as root in the
# chart (it owns the host's data dir and, with agent.kvm.mode hostPath, opens /dev/kvm), with
# every capability dropped unless the chart makes it privileged for /dev/kvm.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p quiver-agent --bin quiver-agent \
    && install -D -m 0755 target/release/quiver-agent /out/quiver-agent

FROM docker.io/library/debian:12-slim
# Versions follow Debian 12's security updates; pinning one would break the build at the next.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/quiver-agent /usr/local/bin/quiver-agent
ENTRYPOINT ["/usr/local/bin/quiver-agent"]
