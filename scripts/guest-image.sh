#!/usr/bin/env bash
# Builds the tiny bootable guest used by the Quiver agent's tests:
#   $QUIVER_GUEST_DIR/vmlinuz   Debian cloud kernel, extracted from the .deb (never installed on the host)
#   $QUIVER_GUEST_DIR/initrd.gz busybox-static initramfs; /init prints QUIVER_GUEST_READY on the console
#
# Idempotent: every step is skipped when its output already exists. Installs its own apt needs
# (busybox-static, cpio, gzip, qemu-system-x86, qemu-utils) with one `apt-get update`.
#
# Guest behaviour:
#   - mounts /proc, /sys, /dev (devtmpfs), prints "QUIVER_GUEST_READY" on the serial console;
#   - kernel cmdline `quiver.oneshot` → `poweroff -f` right after the marker;
#   - otherwise idles. ACPI powerdown works: the initramfs carries the kernel's `button` and
#     `evdev` modules and runs busybox `acpid`, whose power-button action is `poweroff -f`. If
#     either is missing (other kernels/busyboxes), the guest ignores the request and the agent's
#     graceful stop falls through to QMP `quit` after its grace period — fine for stateless guests.
#
# Kernel command line for microvm under TCG (tests use this):
#   console=ttyS0 edd=off quiet panic=-1 reboot=t tsc=reliable tsc_early_khz=2000000 no_timer_check
# microvm has no HPET/PM timer; on a busy host the guest's TSC calibration fails and the boot
# hangs, so the TSC frequency is given instead of measured.
set -euo pipefail

OUT="${QUIVER_GUEST_DIR:-/var/lib/quiver/guest}"
MARKER="QUIVER_GUEST_READY"

# Bump when the initramfs contents change, so existing images are rebuilt.
INITRD_VERSION=3
MARKER_FILE="$OUT/.initrd-version"

initrd_current() {
    [[ -s "$OUT/initrd.gz" && "$(cat "$MARKER_FILE" 2>/dev/null)" == "$INITRD_VERSION" ]]
}

if [[ -s "$OUT/vmlinuz" ]] && initrd_current && command -v qemu-system-x86_64 >/dev/null \
    && command -v qemu-img >/dev/null; then
    echo "guest image already present in $OUT"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

need=()
command -v cpio >/dev/null || need+=(cpio)
command -v gzip >/dev/null || need+=(gzip)
# qemu-system-x86 and qemu-utils are installed together so apt picks matching versions (installing
# only one of them next to a newer preinstalled other can make apt remove that other).
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null; then
    need+=(qemu-system-x86 qemu-utils)
fi
# busybox must be the static build: it is copied into the initramfs.
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    need+=(busybox-static)
fi
updated=0
apt_update_once() {
    if [[ $updated -eq 0 ]]; then
        $SUDO apt-get update -qq
        updated=1
    fi
}
if [[ ${#need[@]} -gt 0 ]]; then
    apt_update_once
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

$SUDO mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The kernel package is needed for vmlinuz and for the initramfs's modules.
apt_update_once
# linux-image-cloud-amd64 is a metapackage; the kernel lives in its versioned dependency.
pkg="$(apt-cache depends linux-image-cloud-amd64 \
    | awk '/Depends: linux-image-[0-9].*-cloud-amd64/ {print $2; exit}')"
if [[ -z "$pkg" ]]; then
    echo "cannot resolve the kernel package behind linux-image-cloud-amd64" >&2
    exit 1
fi
(cd "$WORK" && apt-get download "$pkg" 2>/dev/null)
dpkg -x "$WORK"/"$pkg"_*.deb "$WORK/kernel"

if [[ ! -s "$OUT/vmlinuz" ]]; then
    kernel="$(find "$WORK/kernel/boot" -name 'vmlinuz-*' | head -n1)"
    $SUDO install -m 0644 "$kernel" "$OUT/vmlinuz.tmp"
    $SUDO mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
    echo "kernel: $pkg → $OUT/vmlinuz"
fi

if ! initrd_current; then
    root="$WORK/initramfs"
    mkdir -p "$root"/{bin,sbin,proc,sys,dev,etc/acpi/PWRF,lib/modules,tmp,var/log,var/run}
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh mount poweroff sleep cat echo grep insmod; do
        ln -sf busybox "$root/bin/$applet"
    done
    # ACPI power button → input event → acpid. Both are modules in Debian's cloud kernel.
    # NB: vmlinuz must come from the same package as these modules (delete both to upgrade).
    for mod in evdev button; do
        found="$(find "$WORK/kernel/lib/modules" -name "$mod.ko" | head -n1)"
        [[ -n "$found" ]] && cp "$found" "$root/lib/modules/"
    done
    cat > "$root/etc/acpi/PWRF/00000080" <<'ACPI'
#!/bin/sh
poweroff -f
ACPI
    chmod +x "$root/etc/acpi/PWRF/00000080"
    cat > "$root/init" <<INIT
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in /lib/modules/*.ko; do
    [ -e "\$m" ] && insmod "\$m" 2>/dev/null
done
# acpid only opens the event devices present when it starts; devtmpfs creates them async.
i=0
while [ ! -e /dev/input/event0 ] && [ \$i -lt 20 ]; do sleep 0.1; i=\$((i + 1)); done
if busybox --list | grep -qx acpid; then
    busybox acpid -c /etc/acpi -l /dev/null 2>/dev/null
fi
echo "$MARKER"
if grep -q quiver.oneshot /proc/cmdline; then
    poweroff -f
fi
while true; do sleep 3600; done
INIT
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$WORK/initrd.gz"
    $SUDO install -m 0644 "$WORK/initrd.gz" "$OUT/initrd.gz"
    echo "$INITRD_VERSION" | $SUDO tee "$MARKER_FILE" >/dev/null
    echo "initramfs → $OUT/initrd.gz"
fi

echo "guest image ready in $OUT"
