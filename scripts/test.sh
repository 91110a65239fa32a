#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need (QEMU, the guest image,
# kubectl, helm), then checks formatting and lints and runs every test, real VMs included.
# `--long` adds the long fault runs (the seeded Raft fault test at 200 seeds of 40 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
long=0
case "${1:-}" in
    --long) long=1 ;;
    "") ;;
    *) echo "usage: $0 [--long]" >&2; exit 2 ;;
esac
bash scripts/guest-image.sh
source scripts/tools.sh
echo "== install scripts"
bash scripts/tests/qemu-packages-test.sh
echo "== Helm chart (lint, schema, values, kubernetes-validate) and Dockerfiles (hadolint)"
bash scripts/tests/chart-test.sh
export QUIVER_REQUIRE_GUEST=1
# tools.sh installed helm: the helm tests must not skip.
export QUIVER_REQUIRE_HELM=1
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== benchmarks at smoke size (benches/run.sh --smoke: every bench binary, nothing written)"
bash benches/run.sh --smoke
echo "== cargo test"
# QEMUs already running belong to someone else; any other QEMU still alive after the tests is a
# VM a test left without an owner.
qemus_before="$(pgrep -d ' ' -x 'qemu-system-x86' || true)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The operator's end-to-end tests again, with the operator calling agents over Iroh only.
echo "== operator end to end over Iroh"
QUIVER_TEST_TRANSPORT=iroh cargo test --locked -p quiver-tests --test operator_e2e \
  --test operator_lost_host --test operator_hosts --test operator_vm_spec 2>&1 | tee -a "$log"
iroh_status=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$iroh_status
set -e
leaked=""
for pid in $(pgrep -x 'qemu-system-x86' || true); do
    case " $qemus_before " in *" $pid "*) ;; *) leaked="$leaked $pid" ;; esac
done
if [ -n "$leaked" ]; then
    echo "QEMU processes outlived the tests (no owner):"
    for pid in $leaked; do tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-300; echo; kill -9 "$pid" 2>/dev/null || true; done
    status=1
fi
# The wire decoder under libFuzzer for 30 s (scripts/fuzz.sh runs it longer); a crash fails the run.
echo "== fuzz: decode_frames, 30 s"
if ! bash scripts/fuzz.sh 30 -verbosity=0; then
    echo "fuzz: decode_frames failed; the input is in agent/rpc/fuzz/artifacts/decode_frames/"
    status=1
fi
if [ "$long" -eq 1 ]; then
    echo "== long: seeded Raft faults, 200 seeds of 40 steps"
    set +e
    QUIVER_FAULT_SEEDS=200 QUIVER_FAULT_STEPS=40 cargo test --locked -p quiver-agent \
      --test raft_faults 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    set -e
fi
# One closing line over every test binary (cargo prints one result line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
