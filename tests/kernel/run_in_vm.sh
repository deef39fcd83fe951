#!/usr/bin/env bash
# Kernel tier (DESIGN.md "Test tiers", tier 5): boot Debian 12's stock kernel
# (linux-image-amd64, 6.1.x) with virtme-ng under TCG and run one command in it
# as root, with the host filesystem (this repo, the venv) visible inside.
#
#   tests/kernel/run_in_vm.sh CMD [ARG...]
#   tests/kernel/run_in_vm.sh bash tests/kernel/guest_smoke.sh
#
# Installs what it needs on first use (Debian packages only when `dpkg -s` says
# they are missing; virtme-ng into $VENV), so a second run goes straight to the
# boot. Prints the guest command's output (stdout and stderr merged) and exits
# with the guest command's exit status, read from a status file the guest
# writes into a host directory shared read-write with it (vng's own exit code
# is not trusted: it is 255 both for "the command exited 255" and for "the
# guest died", and a command killed by a signal comes back as 255 too).
#
# Exit codes besides the command's own: 124 the timeout guard fired before the
# guest reported a status, 125 the guest never reported a status (boot failure,
# kernel panic, qemu error), 126 set-up failed on the host.
#
# Environment (all optional):
#   VENV              venv for virtme-ng and the guest's python (default: REPO/.venv)
#   KTIER_PYTHON      interpreter used to create VENV if missing (default: python3)
#   KTIER_KERNEL      kernel image (default: newest /boot/vmlinuz-6.1*)
#   KTIER_TIMEOUT     seconds for boot + command, hard guard (default: 600)
#   KTIER_MEMORY      guest memory (default: 2G)
#   KTIER_CPUS        guest vCPUs (default: 2)
#   KTIER_OUTDIR      host dir shared read-write with the guest, exported to the
#                     command as KTIER_OUT; kept afterwards (default: a temp dir,
#                     removed at exit). The console log lands there as console.log.
#   KTIER_VNG_SPEC    pip requirement for virtme-ng (default: virtme-ng==1.42)
#   KTIER_SKIP_INSTALL=1  do not check/install anything (fail if missing)
#   KTIER_VERBOSE=1   show the guest kernel's boot log (vng --verbose)
#   KTIER_FASTPY=0    do not re-mount the venv and its base python with a caching 9p
#                     mount in the guest (default 1; see README "Python speed")
#   KTIER_APPEND      extra guest kernel command line (default: blacklists the
#                     modules udev would load for qemu's emulated PC hardware)
#   KTIER_ENV         space-separated names of extra host variables to pass in
#                     (XDPLB_*, PYTEST_ADDOPTS and KTIER_* are always passed)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
KTIER_PYTHON="${KTIER_PYTHON:-python3}"
KTIER_TIMEOUT="${KTIER_TIMEOUT:-600}"
KTIER_MEMORY="${KTIER_MEMORY:-2G}"
KTIER_CPUS="${KTIER_CPUS:-2}"
KTIER_VNG_SPEC="${KTIER_VNG_SPEC:-virtme-ng==1.42}"

log() { printf '[run_in_vm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 126; }

[ "$#" -ge 1 ] || { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' >&2; exit 126; }
[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get, and the guest runs as the calling user)"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac

# Debian packages. linux-image-amd64 pulls in initramfs-tools; INITRD=No makes
# the kernel's postinst hook skip building /boot/initrd.img (virtme-ng builds its
# own tiny initramfs with busybox at every boot, so Debian's is never used).
# iproute2/kmod/procps are used inside the guest (the guest runs the host's
# userspace).
PKGS=(qemu-system-x86 linux-image-amd64 busybox-static iproute2 kmod procps iputils-ping)

ensure_packages() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        # like `dpkg -s`, but a removed package whose conffiles remain counts as missing
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive INITRD=No
    # wait for a concurrent apt/dpkg rather than fail on its lock
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
    log "packages installed in $((SECONDS - t0)) s"
}

ensure_venv() {
    local t0=$SECONDS changed=0
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating venv $VENV"
        changed=1
        if ! "$KTIER_PYTHON" -m venv "$VENV" >&2; then
            # Debian's own python3 has no venv module without python3-venv
            log "venv failed; installing python3-venv and retrying"
            rm -rf "$VENV"
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
                --no-install-recommends python3-venv >&2
            "$KTIER_PYTHON" -m venv "$VENV" >&2
        fi
    fi
    if [ ! -x "$VENV/bin/vng" ]; then
        log "pip install $KTIER_VNG_SPEC into $VENV"
        changed=1
        "$VENV/bin/python" -m pip install -q "$KTIER_VNG_SPEC" >&2
    fi
    # The guest runs tests with this venv's python: it needs pyroute2 and scapy.
    if ! "$VENV/bin/python" -c 'import pyroute2, scapy' >/dev/null 2>&1; then
        log "pip install pyroute2 scapy into $VENV"
        changed=1
        "$VENV/bin/python" -m pip install -q pyroute2 scapy >&2
    fi
    if [ "$changed" = 1 ]; then log "venv ready in $((SECONDS - t0)) s"; fi
}

find_kernel() {
    if [ -n "${KTIER_KERNEL:-}" ]; then
        [ -r "$KTIER_KERNEL" ] || die "KTIER_KERNEL=$KTIER_KERNEL is not readable"
        printf '%s\n' "$KTIER_KERNEL"
        return
    fi
    local k
    k="$(printf '%s\n' /boot/vmlinuz-6.1.* | grep -v '\*' | sort -V | tail -n 1 || true)"
    [ -n "$k" ] || die "no /boot/vmlinuz-6.1.* (is linux-image-amd64 installed?)"
    local ver="${k#/boot/vmlinuz-}"
    [ -d "/lib/modules/$ver" ] || die "no /lib/modules/$ver for $k"
    printf '%s\n' "$k"
}

if [ "${KTIER_SKIP_INSTALL:-0}" != 1 ]; then
    ensure_packages
    ensure_venv
fi
[ -x "$VENV/bin/vng" ] || die "$VENV/bin/vng missing (unset KTIER_SKIP_INSTALL)"
KERNEL="$(find_kernel)"

# Host directory shared read-write with the guest: the wrapper script, the
# command's status, and whatever the command wants to hand back (KTIER_OUT).
# Everything else of the host is read-only in the guest (/etc, /usr, /tmp, ...
# are copy-on-write overlays that vanish with the guest; /work is plain
# read-only, hence the overlay on the repo below).
if [ -n "${KTIER_OUTDIR:-}" ]; then
    mkdir -p "$KTIER_OUTDIR"
    OUTDIR="$(cd "$KTIER_OUTDIR" && pwd)"
    rm -f "$OUTDIR/rc" "$OUTDIR/guest-wrapper.sh"
else
    OUTDIR="$(mktemp -d /tmp/ktier.XXXXXX)"
    trap 'rm -rf "$OUTDIR"' EXIT
fi

# Python under TCG: the guest's root is the host's / over 9p without any cache
# (virtme-ng mounts it cache=none), so every stat/open of an import is a round
# trip through the emulated virtio device. Export the venv and its base python
# once more and mount them in the guest with cache=loose (read-only; the guest
# then caches dentries, attributes and pages).
FAST_DIRS=()
QEMU_OPTS=""
if [ "${KTIER_FASTPY:-1}" = 1 ]; then
    base="$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)')"
    for d in "$base" "$VENV"; do
        case "$d" in /|/usr|/usr/*|*[[:space:],]*) continue ;; esac
        [ -d "$d" ] || continue
        QEMU_OPTS+=" -virtfs local,path=$d,mount_tag=ktfast${#FAST_DIRS[@]},security_model=none,readonly=on,multidevs=remap"
        FAST_DIRS+=("$d")
    done
fi
# The modules udev would load at boot for q35's emulated hardware (kvm, crypto
# accelerators, AHCI/CD-ROM, watchdogs, input, ...): none is needed, and
# loading them under TCG costs seconds of boot.
KTIER_APPEND="${KTIER_APPEND-modprobe.blacklist=kvm_amd,kvm_intel,kvm,ccp,crct10dif_pclmul,crc32_pclmul,ghash_clmulni_intel,sha512_ssse3,sha256_ssse3,sha1_ssse3,aesni_intel,sr_mod,sg,ahci,iTCO_wdt,intel_pmc_bxt,i6300esb,i2c_i801,lpc_ich,evdev,psmouse,serio_raw,button,pcspkr,joydev}"

# Environment handed to the guest command (the guest starts from a clean one).
read -ra extra_env <<< "${KTIER_ENV:-}"
ENV_NAMES=(VENV HOME LANG LC_ALL TERM "${extra_env[@]}")
while IFS='=' read -r name _; do
    case "$name" in XDPLB_*|KTIER_*|PYTEST_ADDOPTS) ENV_NAMES+=("$name") ;; esac
done < <(env)

{
    echo '#!/bin/bash'
    echo '# generated by tests/kernel/run_in_vm.sh; runs inside the guest'
    for name in "${ENV_NAMES[@]}"; do
        if [ -n "${!name+x}" ]; then printf 'export %s=%q\n' "$name" "${!name}"; fi
    done
    printf 'export KTIER_OUT=%q\n' "$OUTDIR"
    printf 'export KTIER_IN_VM=1\n'
    printf 'export PATH=%q\n' "$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # The repo is a copy-on-write overlay in the guest: bytecode written there
    # lives in guest RAM for this boot only, and compiling once per boot beats
    # compiling in every python process (the host may set this variable).
    echo 'unset PYTHONDONTWRITEBYTECODE'
    printf 'cd %q || exit 126\n' "$PWD"
    printf 'KTIER_CMD_STR=%q\n' "$*"
    printf 'set -- '; printf '%q ' "$@"; echo
    cat <<'EOF'
read -r up _ < /proc/uptime
echo "[guest] $(uname -r) up ${up}s; running: ${KTIER_CMD_STR//$'\n'/ }"
# bpffs is not mounted by virtme-ng-init.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
EOF
    for i in "${!FAST_DIRS[@]}"; do
        printf 'mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=512000 ktfast%d %q || echo "[guest] warning: caching mount of %q failed"\n' \
            "$i" "${FAST_DIRS[$i]}" "${FAST_DIRS[$i]}"
    done
    cat <<'EOF'
"$@" 2>&1 < /dev/null
rc=$?
read -r up _ < /proc/uptime
echo "[guest] exit status $rc at uptime ${up}s"
echo "$rc" > "$KTIER_OUT/rc.tmp" && mv "$KTIER_OUT/rc.tmp" "$KTIER_OUT/rc"
sync
exit "$rc"
EOF
} > "$OUTDIR/guest-wrapper.sh"
chmod +x "$OUTDIR/guest-wrapper.sh"

VNG_ARGS=(
    --run "$KERNEL"
    --disable-kvm
    --cpus "$KTIER_CPUS"
    --memory "$KTIER_MEMORY"
    --rwdir "$OUTDIR"
    --overlay-rwdir "$REPO"
    --exec "bash $OUTDIR/guest-wrapper.sh"
)
if [ -n "$QEMU_OPTS" ]; then VNG_ARGS+=(--qemu-opts="${QEMU_OPTS# }"); fi
if [ -n "$KTIER_APPEND" ]; then VNG_ARGS+=(--append "$KTIER_APPEND"); fi
if [ "${KTIER_VERBOSE:-0}" = 1 ]; then VNG_ARGS+=(--verbose); fi

log "booting $KERNEL (virtme-ng $("$VENV/bin/vng" --version | awk '{print $2}'), TCG, ${KTIER_CPUS} vCPU, ${KTIER_MEMORY}, timeout ${KTIER_TIMEOUT}s)"
t0=$SECONDS
set +e
# vng needs its own bin dir on PATH (it execs virtme-run). Its output goes
# through a pipe on purpose: qemu opens /proc/self/fd/1 and /proc/self/fd/2
# once per virtio port with O_TRUNC, so with a regular file as stdout the
# writers truncate and overwrite each other.
PATH="$VENV/bin:$PATH" timeout --kill-after=15 "$KTIER_TIMEOUT" \
    "$VENV/bin/vng" "${VNG_ARGS[@]}" < /dev/null 2>&1 | tee "$OUTDIR/console.log"
st=("${PIPESTATUS[@]}")
set -e
vng_rc="${st[0]}"
elapsed=$((SECONDS - t0))

if [ -s "$OUTDIR/rc" ]; then
    rc="$(cat "$OUTDIR/rc")"
    log "guest command exited $rc; boot + run took ${elapsed} s (vng exit $vng_rc)"
    exit "$rc"
fi
if [ "$vng_rc" -eq 124 ] || [ "$vng_rc" -eq 137 ]; then
    log "ERROR: timeout (${KTIER_TIMEOUT}s) before the guest reported a status"
    exit 124
fi
log "ERROR: the guest reported no status (boot failure, panic or qemu error; vng exit $vng_rc) after ${elapsed} s"
exit 125
