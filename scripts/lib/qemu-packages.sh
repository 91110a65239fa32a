# Sourced by guest-image.sh (and its test): which apt packages give a working QEMU.
#
# A machine may already carry some QEMU pieces at a version apt cannot match: a fresh Debian 12
# machine of the kind Quiver is developed on ships qemu-utils 10.0 (a backport) but no
# qemu-system-x86, and apt only offers qemu-system-x86 7.2. qemu-utils 10 Breaks
# qemu-system-common < 8.0, so installing qemu-system-x86 next to it fails ("held broken packages"),
# and installing it alone makes apt remove qemu-utils (no qemu-img). The way out is to install
# every QEMU package at one version, letting apt downgrade the newer ones.

# qemu_anchor_version INSTALLED_SYSTEM CANDIDATE_SYSTEM
# The version every QEMU package is pinned to: the installed qemu-system-x86 if there is one (never
# replace a working emulator), else apt's candidate for it. Fails when neither exists.
qemu_anchor_version() {
    local installed="$1" candidate="$2"
    if [[ -n "$installed" ]]; then
        echo "$installed"
    elif [[ -n "$candidate" && "$candidate" != "(none)" ]]; then
        echo "$candidate"
    else
        echo "no qemu-system-x86 available from apt (is a Debian main source configured?)" >&2
        return 1
    fi
}

# qemu_pin_version ANCHOR AVAILABLE...
# The version of one more QEMU package that goes with ANCHOR: ANCHOR itself when apt has it, else
# ANCHOR without a binNMU suffix (architecture-independent packages such as qemu-system-data are
# not rebuilt, so qemu-system-x86 1:7.2+dfsg-7+b2 goes with qemu-system-data 1:7.2+dfsg-7).
qemu_pin_version() {
    local anchor="$1" v
    shift
    for v in "$@"; do
        if [[ "$v" == "$anchor" ]]; then echo "$v"; return 0; fi
    done
    for v in "$@"; do
        if [[ "$v" == "${anchor%+b[0-9]*}" ]]; then echo "$v"; return 0; fi
    done
    echo "no version of a QEMU package matches $anchor (available: $*)" >&2
    return 1
}

# qemu_install_args ANCHOR < lines "package installed-version available-version..." of the installed
# packages built from QEMU's source.
# Prints the apt-get install arguments, one per line: qemu-system-x86 and qemu-utils pinned to
# ANCHOR, every other installed QEMU package at another version pinned to its matching version, and
# `--allow-downgrades` first when any installed package is newer than what it is pinned to.
qemu_install_args() {
    local anchor="$1" pkg version available_line pin downgrade=0
    local -a pins=("qemu-system-x86=$anchor" "qemu-utils=$anchor") available
    while read -r pkg version available_line; do
        [[ -z "$pkg" ]] && continue
        case "$pkg" in
            qemu-system-x86 | qemu-utils) pin="$anchor" ;;
            *)
                read -r -a available <<<"$available_line"
                pin="$(qemu_pin_version "$anchor" "${available[@]}")" || return 1
                [[ "$version" != "$pin" ]] && pins+=("$pkg=$pin")
                ;;
        esac
        if dpkg --compare-versions "$version" gt "$pin"; then downgrade=1; fi
    done
    if [[ $downgrade -eq 1 ]]; then echo "--allow-downgrades"; fi
    printf '%s\n' "${pins[@]}"
}

# qemu_installed_packages: "package installed-version available-version..." of every installed
# package built from QEMU's source (the input of qemu_install_args).
qemu_installed_packages() {
    local pkg version
    dpkg-query -W -f='${Package} ${Version} ${source:Package} ${db:Status-Status}\n' 2>/dev/null \
        | awk '$3 == "qemu" && $4 == "installed" { print $1, $2 }' \
        | while read -r pkg version; do
            echo "$pkg $version $(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); printf "%s ", $2 }')"
        done
}

# qemu_working: both binaries the agent needs run.
qemu_working() {
    qemu-system-x86_64 --version >/dev/null 2>&1 && qemu-img --version >/dev/null 2>&1
}
