#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need (QEMU, the guest image,
# kubectl), then checks formatting and lints and runs every test, real VMs included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/guest-image.sh
source scripts/tools.sh
echo "== install scripts"
bash scripts/tests/qemu-packages-test.sh
export QUIVER_REQUIRE_GUEST=1
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== benchmarks at smoke size (benches/run.sh --smoke: every bench binary, nothing written)"
bash benches/run.sh --smoke
echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one result line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
