#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need (QEMU, the guest image,
# kubectl), then checks formatting and lints and runs every test, real VMs included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/guest-image.sh
source scripts/tools.sh
export QUIVER_REQUIRE_GUEST=1
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
