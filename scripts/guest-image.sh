#!/usr/bin/env bash
# Builds the tiny bootable guest used by the Quiver agent's tests:
#   $QUIVER_GUEST_DIR/vmlinuz   Debian cloud kernel, extracted from the .deb (never installed on the host)
#   $QUIVER_GUEST_DIR/initrd.gz busybox-static initramfs; /init prints QUIVER_GUEST_READY on the console
#
# Idempotent: every step is skipped when its output already exists. Installs its own apt needs
# (busybox-static, cpio, gzip, and qemu-system-x86 + qemu-utils at one version, downgrading a newer
# preinstalled qemu-utils where needed) with one `apt-get update`.
#
# Guest behaviour:
#   - mounts /proc, /sys, /dev (devtmpfs), prints "QUIVER_GUEST_READY" on the serial console;
#   - kernel cmdline `quiver.oneshot` → `poweroff -f` right after the marker;
#   - otherwise runs an interactive shell on ttyS0 (the console takes input). ACPI powerdown
#     works: the initramfs carries the kernel's `button` and `evdev` modules and runs busybox
#     `acpid`, whose power-button action is `poweroff -f`. If either is missing (other kernels or
#     busyboxes), the guest ignores the request and the agent's
#     graceful stop falls through to QMP `quit` after its grace period — fine for stateless guests.
#
# Kernel command line for microvm under TCG (tests use this):
#   console=ttyS0 edd=off quiet panic=-1 reboot=t tsc=reliable tsc_early_khz=2000000 no_timer_check
# microvm has no HPET/PM timer; on a busy host the guest's TSC calibration fails and the boot
# hangs, so the TSC frequency is given instead of measured.
set -euo pipefail

OUT="${QUIVER_GUEST_DIR:-/var/lib/quiver/guest}"
MARKER="QUIVER_GUEST_READY"
HTTP_MARKER="QUIVER_GUEST_HTTP"

# Bump when the initramfs contents change, so existing images are rebuilt.
INITRD_VERSION=5
MARKER_FILE="$OUT/.initrd-version"
# Kernel modules the initramfs carries, in load order: the ACPI power button, then virtio over MMIO
# (the only bus of `-M microvm`) with its block and network drivers.
GUEST_MODULES="evdev button virtio virtio_ring virtio_mmio virtio_blk failover net_failover virtio_net"

initrd_current() {
    [[ -s "$OUT/initrd.gz" && "$(cat "$MARKER_FILE" 2>/dev/null)" == "$INITRD_VERSION" ]]
}

if [[ -s "$OUT/vmlinuz" ]] && initrd_current && qemu-system-x86_64 --version >/dev/null 2>&1 \
    && qemu-img --version >/dev/null 2>&1; then
    echo "guest image already present in $OUT"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

source "$(dirname "$0")/lib/qemu-packages.sh"

updated=0
apt_update_once() {
    if [[ $updated -eq 0 ]]; then
        $SUDO apt-get update -qq
        updated=1
    fi
}
apt_install() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

need=()
command -v cpio >/dev/null || need+=(cpio)
command -v gzip >/dev/null || need+=(gzip)
# busybox must be the static build: it is copied into the initramfs.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [[ ${#need[@]} -gt 0 ]]; then
    apt_update_once
    apt_install "${need[@]}"
fi

# QEMU: qemu-system-x86 and qemu-utils at one version, whatever pieces are already here
# (lib/qemu-packages.sh says why; scripts/tests/qemu-packages-test.sh checks the choice).
if ! qemu_working; then
    apt_update_once
    installed="$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)"
    [[ "$(dpkg-query -W -f='${db:Status-Status}' qemu-system-x86 2>/dev/null)" == installed ]] || installed=""
    candidate="$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')"
    anchor="$(qemu_anchor_version "$installed" "$candidate")"
    args="$(qemu_installed_packages | qemu_install_args "$anchor")"
    mapfile -t qemu_args <<<"$args"
    echo "installing QEMU $anchor: ${qemu_args[*]}"
    apt_install "${qemu_args[@]}"
    qemu_working || { echo "QEMU still not usable after installing ${qemu_args[*]}" >&2; exit 1; }
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
    for applet in sh mount poweroff sleep cat echo grep insmod ifconfig route httpd dd setsid; do
        ln -sf busybox "$root/bin/$applet"
    done
    # ACPI power button → input event → acpid. Both are modules in Debian's cloud kernel.
    # NB: vmlinuz must come from the same package as these modules (delete both to upgrade).
    for mod in $GUEST_MODULES; do
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
# Two passes: a module whose dependency comes later in the list loads on the second.
for pass in 1 2; do
    for m in $GUEST_MODULES; do
        [ -e /lib/modules/\$m.ko ] && insmod /lib/modules/\$m.ko 2>/dev/null
    done
done
# acpid only opens the event devices present when it starts; devtmpfs creates them async.
i=0
while [ ! -e /dev/input/event0 ] && [ \$i -lt 20 ]; do sleep 0.1; i=\$((i + 1)); done
if busybox --list | grep -qx acpid; then
    busybox acpid -c /etc/acpi -l /dev/null 2>/dev/null
fi
ifconfig lo 127.0.0.1 up
# A NIC (QEMU user networking): the user-net defaults, and an HTTP service on port 80.
if [ -e /sys/class/net/eth0 ]; then
    ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
    route add default gw 10.0.2.2
    mkdir -p /www
    echo "$HTTP_MARKER" > /www/index.html
    httpd -p 80 -h /www
fi
# Disk probe (kernel cmdline quiver.probe_disks): one console line per virtio disk with its serial
# (the drive's name), the kernel's read-only flag and whether a write to its first sector succeeds.
if grep -q quiver.probe_disks /proc/cmdline; then
    for d in /sys/block/vd*; do
        [ -e "\$d" ] || continue
        name=\${d##*/}
        if dd if=/dev/\$name of=/dev/\$name bs=512 count=1 conv=notrunc,fsync 2>/dev/null; then
            w=ok
        else
            w=refused
        fi
        echo "QUIVER_DISK \$name serial=\$(cat \$d/serial 2>/dev/null) ro=\$(cat \$d/ro) write=\$w"
    done
fi
echo "$MARKER"
if grep -q quiver.oneshot /proc/cmdline; then
    poweroff -f
fi
# An interactive shell on the serial console, started again when it exits: what a user types
# into \`kubectl quiver vm console\` runs here. setsid + opening ttyS0 makes it the controlling
# terminal, so Ctrl-C interrupts the command in the foreground.
while true; do
    setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'
    sleep 1
done
INIT
    chmod +x "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$WORK/initrd.gz"
    $SUDO install -m 0644 "$WORK/initrd.gz" "$OUT/initrd.gz"
    echo "$INITRD_VERSION" | $SUDO tee "$MARKER_FILE" >/dev/null
    echo "initramfs → $OUT/initrd.gz"
fi

echo "guest image ready in $OUT"
