#!/usr/bin/env bash
# Fuzzes the wire protocol's decoder (agent/rpc/fuzz, target decode_frames) with libFuzzer.
#   scripts/fuzz.sh [seconds [libFuzzer options...]]
#     seconds: default 30, what scripts/test.sh runs; e.g. 3600 for an hour.
#     -verbosity=0 prints only the outcome (and a crash in full).
# Installs cargo-fuzz when missing (~2 min once, then cached in ~/.cargo/bin). Only stable Rust is
# needed: RUSTC_BOOTSTRAP lets it take the -Z flags cargo-fuzz passes. AddressSanitizer (the
# default) works so: it instruments our code and its dependencies (the unsafe code of `bytes`
# included), not the prebuilt standard library.
# New inputs go to a scratch corpus next to the checked-in seeds (corpus/decode_frames, which stays
# unchanged); a crash fails the script and leaves its input in agent/rpc/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../agent/rpc/fuzz"
seconds="${1:-30}"
shift $(( $# > 0 ? 1 : 0 ))
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
# cargo-fuzz has no --locked: check the fuzz crate's own lockfile is current first.
cargo fetch --locked --quiet
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
RUSTC_BOOTSTRAP=1 cargo fuzz run decode_frames "$scratch" corpus/decode_frames \
    -- -max_total_time="$seconds" -print_final_stats=1 "$@"
