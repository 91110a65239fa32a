#!/usr/bin/env bash
# Runs every benchmark and rewrites docs/benchmarks.md (each binary its own section) and the
# JSON beside it: docs/benchmarks/<section>.json, each section's tables, written last by
# bench-json (bench-rpc writes its own rpc.json, with every sample set).
#
#   bash benches/run.sh                  every benchmark, release build, docs rewritten
#   bash benches/run.sh --smoke          every benchmark at a tiny size, debug build, nothing
#                                        written: seconds, so CI keeps the harness from rotting
#                                        (bench-rpc without its (f) baseline, benches/tonic-iroh,
#                                        a second build of iroh that the full run makes)
#   bash benches/run.sh [--smoke] rpc e2e   only the named ones (apiserver, agent, e2e, rpc,
#                                        failover, raft, rollout, scale)
#
# agent, e2e and failover boot real QEMU guests and need the guest image (scripts/guest-image.sh); without
# it they are skipped, unless QUIVER_REQUIRE_GUEST is set.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
names=()
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=1 ;;
        apiserver | agent | e2e | rpc | failover | raft | rollout | scale) names+=("$arg") ;;
        *)
            echo "usage: bash benches/run.sh [--smoke] [apiserver|agent|e2e|rpc|failover|raft|rollout|scale]..." >&2
            exit 2
            ;;
    esac
done
[ "${#names[@]}" -gt 0 ] || names=(apiserver e2e agent rpc failover raft rollout scale)

if [ "$smoke" = 1 ]; then
    profile=debug build=() flags=(--smoke)
else
    profile=release build=(--release) flags=()
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"

guest="${QUIVER_GUEST_DIR:-/var/lib/quiver/guest}"
have_guest=0
[ -f "$guest/vmlinuz" ] && [ -f "$guest/initrd.gz" ] && have_guest=1

failed=()
needs_agent=0
for name in "${names[@]}"; do
    case "$name" in agent | e2e | failover | rollout | scale) needs_agent=1 ;; esac
done

# One cargo invocation, so that shared dependencies (iroh, tonic...) build once with one
# feature set.
packages=(-p quiver-benches)
if [ "$needs_agent" = 1 ]; then
    packages+=(-p quiver-agent)
    export QUIVER_AGENT_BIN="$target/$profile/quiver-agent"
fi
for name in "${names[@]}"; do
    if [ "$name" = scale ]; then
        packages+=(-p quiver-operator)
        export QUIVER_OPERATOR_BIN="$target/$profile/quiver-operator"
    fi
done
echo "== build ($profile)"
cargo build --locked "${build[@]}" "${packages[@]}" --bins
for name in "${names[@]}"; do
    if [ "$name" = rpc ] && [ "$smoke" = 0 ]; then
        # bench-rpc's (f) baseline: its own crate and lockfile (iroh 0.98 cannot share ours).
        echo "== build benches/tonic-iroh (release)"
        cargo build --locked --release --manifest-path benches/tonic-iroh/Cargo.toml
        export QUIVER_TONIC_IROH_BIN="$target/release/bench-tonic-iroh"
    fi
done

for name in "${names[@]}"; do
    case "$name" in
        agent | e2e | failover)
            if [ "$have_guest" = 0 ]; then
                if [ -n "${QUIVER_REQUIRE_GUEST:-}" ]; then
                    echo "bench-$name: no guest image in $guest (scripts/guest-image.sh)" >&2
                    exit 1
                fi
                echo "== bench-$name: SKIPPED, no guest image in $guest (scripts/guest-image.sh)"
                continue
            fi
            ;;
    esac
    echo "== bench-$name ${flags[*]}"
    started=$SECONDS
    # A failed benchmark leaves its section as it was; the others still run.
    if "$target/$profile/bench-$name" "${flags[@]}"; then
        echo "== bench-$name: $((SECONDS - started)) s"
    else
        echo "== bench-$name: FAILED after $((SECONDS - started)) s" >&2
        failed+=("$name")
    fi
done
if [ "$smoke" = 0 ]; then
    # The page's tables as JSON beside it (docs/benchmarks/<section>.json).
    "$target/$profile/bench-json"
fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
