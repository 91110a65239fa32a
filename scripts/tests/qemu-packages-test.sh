#!/usr/bin/env bash
# Checks the QEMU package choice of scripts/lib/qemu-packages.sh against the machine states it must
# cope with (run by scripts/test.sh; needs only bash and dpkg).
set -euo pipefail
source "$(dirname "$0")/../lib/qemu-packages.sh"

failures=0
check() {
    local name="$1" expected="$2" actual="$3"
    if [[ "$expected" == "$actual" ]]; then
        echo "ok   $name"
    else
        echo "FAIL $name"
        echo "     expected: $(echo "$expected" | tr '\n' ' ')"
        echo "     actual:   $(echo "$actual" | tr '\n' ' ')"
        failures=$((failures + 1))
    fi
}

v72="1:7.2+dfsg-7+deb12u18+b2"
v72_all="1:7.2+dfsg-7+deb12u18"
v10="1:10.0.2+ds-2+deb13u1~bpo12+1"

check "fresh machine: nothing installed, both pinned to the candidate" \
    "$(printf '%s\n' "qemu-system-x86=$v72" "qemu-utils=$v72")" \
    "$(qemu_install_args "$v72" </dev/null)"

check "newer qemu-utils preinstalled (the shipped state): downgraded to match" \
    "$(printf '%s\n' --allow-downgrades "qemu-system-x86=$v72" "qemu-utils=$v72")" \
    "$(qemu_install_args "$v72" <<<"qemu-utils $v10 $v72")"

check "newer qemu-utils and qemu-block-extra: both downgraded" \
    "$(printf '%s\n' --allow-downgrades "qemu-system-x86=$v72" "qemu-utils=$v72" "qemu-block-extra=$v72")" \
    "$(qemu_install_args "$v72" <<<"qemu-utils $v10 $v72
qemu-block-extra $v10 $v72")"

check "architecture-independent package pinned without the binNMU suffix" \
    "$(printf '%s\n' --allow-downgrades "qemu-system-x86=$v72" "qemu-utils=$v72" "qemu-system-data=$v72_all")" \
    "$(qemu_install_args "$v72" <<<"qemu-system-data $v10 $v72_all")"

check "matching pieces installed: no downgrade, nothing else pinned" \
    "$(printf '%s\n' "qemu-system-x86=$v72" "qemu-utils=$v72")" \
    "$(qemu_install_args "$v72" <<<"qemu-system-x86 $v72 $v72
qemu-system-common $v72 $v72")"

check "installed emulator is the anchor, not apt's candidate" \
    "$v10" "$(qemu_anchor_version "$v10" "$v72")"
check "no emulator installed: apt's candidate is the anchor" \
    "$v72" "$(qemu_anchor_version "" "$v72")"
if qemu_anchor_version "" "(none)" 2>/dev/null; then
    echo "FAIL no candidate must be an error"; failures=$((failures + 1))
else
    echo "ok   no candidate is an error"
fi
if qemu_install_args "$v72" <<<"qemu-system-data $v10 1:9.0" 2>/dev/null >/dev/null; then
    echo "FAIL a package with no matching version must be an error"; failures=$((failures + 1))
else
    echo "ok   a package with no matching version is an error"
fi

if [[ $failures -gt 0 ]]; then
    echo "qemu package choice: $failures failed"
    exit 1
fi
echo "qemu package choice: all passed"
