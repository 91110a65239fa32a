#!/usr/bin/env bash
# Profiles the scale benchmark: runs bench-scale at one size (release build,
# docs untouched) under `perf record` for the operator process, the benchmark's own process
# (the dev control plane and the client) and the first agent, and writes the top costs of each
# as text:
#
#   bash benches/profile-scale.sh [VMS]
#       default 10000; writes docs/profiles/scale-<VMS>-<process>.txt
#
# Needs `perf` (Debian: linux-perf). Symbols come from the release binaries' symbol tables
# and stacks from their unwind tables (no debuginfo build needed); inlined functions count
# toward their callers.
set -euo pipefail
cd "$(dirname "$0")/.."
vms="${1:-10000}"
command -v perf >/dev/null || { echo "profile-scale: needs perf (apt-get install linux-perf)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --locked --release -p quiver-benches -p quiver-agent -p quiver-operator --bins
export QUIVER_AGENT_BIN="$target/release/quiver-agent" QUIVER_OPERATOR_BIN="$target/release/quiver-operator"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$target/release/bench-scale" --sizes "$vms" --no-write >"$work/bench.log" 2>&1 &
bench=$!
operator=""
for _ in $(seq 1 300); do
    operator="$(pgrep -P "$bench" -f 'quiver-operator run' | head -1 || true)"
    [ -n "$operator" ] && break
    sleep 0.2
done
[ -n "$operator" ] || { cat "$work/bench.log"; echo "profile-scale: the operator did not start" >&2; exit 1; }
# The agents start before the operator.
agent="$(pgrep -P "$bench" -f 'quiver-agent' | head -1 || true)"
[ -n "$agent" ] || { cat "$work/bench.log"; echo "profile-scale: no agent runs" >&2; exit 1; }
recorders=()
for who in operator:"$operator" bench:"$bench" agent:"$agent"; do
    perf record -q -F 99 --call-graph dwarf,16384 -p "${who#*:}" -o "$work/${who%%:*}.data" >/dev/null 2>&1 &
    recorders+=($!)
done
status=0
wait "$bench" || status=$?
kill -INT "${recorders[@]}" 2>/dev/null || true
wait "${recorders[@]}" 2>/dev/null || true
cat "$work/bench.log" | head -1
[ "$status" -eq 0 ] || { cat "$work/bench.log"; exit "$status"; }
mkdir -p docs/profiles
for who in operator bench agent; do
    out="docs/profiles/scale-$vms-$who.txt"
    {
        echo "# perf profile: bench-scale --sizes $vms, process: $who"
        echo "# command: bash benches/profile-scale.sh $vms ($(date -u +%F), $(nproc) cores)"
        echo "# $(head -1 "$work/bench.log")"
        echo "# columns: share of samples in the function or below it (children), in the function itself"
        perf report -i "$work/$who.data" --children --no-inline -g none --sort symbol --stdio 2>/dev/null |
            grep '%' | grep -v '^#' | sed 's/  */ /g; s/ - - *$//' | awk 'NR <= 80'
    } >"$out"
    echo "wrote $out"
done
