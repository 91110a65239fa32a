#!/usr/bin/env bash
# The main job (README): a dev cluster on this machine — the embedded Kubernetes-compatible
# control plane, the operator and an agent — and a demo MicroVM booted to GuestReady.
# Installs QEMU and builds the guest image if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/guest-image.sh
source scripts/tools.sh
cargo build --locked -p quiver-operator -p quiver-agent -p kubectl-quiver --bins
exec "$CARGO_TARGET_DIR/debug/quiver-operator" dev --demo "$@"
