#!/usr/bin/env bash
# SSH lab hosts: a network namespace of the lab that is reached the way a fleet host is, over SSH as
# an unprivileged user with sudo, running the host's own /usr/bin/python3 and its own packages.
#
#   ssh_host.sh image IMAGE_DIR PACKAGE...   build the root file system every SSH host boots from
#   ssh_host.sh start IMAGE_DIR HOST_DIR NETNS PUBKEY KNOWN_HOSTS
#                                            boot one host (idempotent: says "running" when it runs)
#   ssh_host.sh stop HOST_DIR                stop it and unmount its root ("stopped" / "absent")
#   ssh_host.sh stop-all STATE_ROOT          stop every host under STATE_ROOT/*/ssh
#   ssh_host.sh boot ROOT HOSTNAME           (internal) PID 1 of the host, inside its namespaces
#
# A host is the image as an overlayfs (writes go to HOST_DIR/upper, its disk: a new lab starts
# from fresh Debian hosts, a stop and start keeps what was installed, as a reboot does), with its
# own mount, PID, UTS and IPC namespaces inside the lab's network namespace: its own /proc, a
# sysfs of its network namespace, its own bpffs at /sys/fs/bpf (pins vanish when it stops, as at a
# reboot) and sshd listening on the namespace's 127.0.0.1:22. The
# controller reaches it through `ip netns exec NETNS nc 127.0.0.1 22` as the SSH ProxyCommand.
# No systemd runs in it (like a container): the roles write their boot units without enabling them.
set -euo pipefail

die() { echo "ssh_host.sh: $*" >&2; exit 1; }

# The Debian mirror this machine's apt uses (never a name written in the repository): the first
# URI of a bookworm suite that is not the security archive. LAB_SSH_MIRROR overrides it.
mirror() {
    if [[ -n "${LAB_SSH_MIRROR:-}" ]]; then echo "$LAB_SSH_MIRROR"; return; fi
    local uri
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {if ($i !~ /security/) {print $i; exit}}}' \
            /etc/apt/sources.list)
    fi
    [[ -n "$uri" ]] || die "no Debian mirror in /etc/apt/sources.list(.d); set LAB_SSH_MIRROR"
    echo "$uri"
}

# Debian 12 minbase with python3, openssh-server, sudo and iproute2; the user `deploy` with passwordless sudo;
# and /srv/xdplb-repo, a local apt repository with PACKAGE... and their dependencies, the only apt
# source of the image: the lab has no network beyond itself, and the roles install from it as they
# would from a mirror. Built next to IMAGE_DIR and renamed into place, so an interrupted build is
# built again from scratch; IMAGE_DIR/etc/xdplb-lab-image holds the package list it was built for.
image() {
    local dir=$1 new="$1.new" want
    shift
    want="bookworm minbase python3 openssh-server sudo iproute2 + $*"
    if [[ -f "$dir/etc/xdplb-lab-image" && "$(cat "$dir/etc/xdplb-lab-image")" == "$want" ]]; then
        echo "ready"; return
    fi
    rm -rf "$new"
    mkdir -p "$(dirname "$dir")"
    debootstrap --variant=minbase --include=python3,openssh-server,sudo,iproute2 bookworm "$new" "$(mirror)" >"$new.log" 2>&1 \
        || { tail -n 20 "$new.log" >&2; die "debootstrap failed (whole log: $new.log)"; }
    cp /etc/resolv.conf "$new/etc/resolv.conf"
    chroot "$new" apt-get -qq update
    rm -f "$new"/var/cache/apt/archives/*.deb
    chroot "$new" apt-get -qq install --download-only --no-install-recommends -y "$@" >/dev/null
    install -d -m 0755 "$new/srv/xdplb-repo"
    find "$new/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec mv -t "$new/srv/xdplb-repo" {} +
    (cd "$new/srv/xdplb-repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null > Packages)
    rm -f "$new/etc/apt/sources.list" "$new"/etc/apt/sources.list.d/*
    echo 'deb [trusted=yes] file:/srv/xdplb-repo ./' > "$new/etc/apt/sources.list.d/xdplb-lab.list"
    chroot "$new" apt-get -qq update
    chroot "$new" apt-get -qq clean
    : > "$new/etc/resolv.conf"
    # Every host makes its own host keys when it first boots.
    rm -f "$new"/etc/ssh/ssh_host_*
    chroot "$new" useradd --create-home --shell /bin/bash deploy
    echo 'deploy ALL=(ALL:ALL) NOPASSWD: ALL' > "$new/etc/sudoers.d/deploy"
    chmod 0440 "$new/etc/sudoers.d/deploy"
    cat > "$new/etc/ssh/sshd_config.d/xdplb-lab.conf" <<'EOF'
ListenAddress 127.0.0.1
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
EOF
    echo "$want" > "$new/etc/xdplb-lab-image"
    rm -rf "$dir" "$new.log"
    mv "$new" "$dir"
    echo "built"
}

running() {
    local pidfile=$1/sshd.pid pid
    [[ -f "$pidfile" ]] || return 1
    pid=$(cat "$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" == unshare* ]]
}

start() {
    local image=$1 dir=$2 netns=$3 pubkey=$4 known=$5 root="$2/root" uid pid
    [[ -f "$image/etc/xdplb-lab-image" ]] || die "no image at $image: run 'ssh_host.sh image' first"
    if running "$dir"; then echo "running"; return; fi
    install -d -m 0700 "$dir" "$dir/work"
    # The upper directory's mode is the mode of the host's /.
    install -d -m 0755 "$dir/upper" "$dir/root"
    mountpoint -q "$root" || mount -t overlay overlay -o "lowerdir=$image,upperdir=$dir/upper,workdir=$dir/work" "$root"
    chroot "$root" ssh-keygen -A >/dev/null
    uid=$(chroot "$root" id -u deploy)
    install -d -m 0700 -o "$uid" -g "$uid" "$root/home/deploy/.ssh"
    install -m 0600 -o "$uid" -g "$uid" "$pubkey" "$root/home/deploy/.ssh/authorized_keys"
    echo "$netns" > "$root/etc/hostname"
    grep -qsx "127.0.1.1 $netns" "$root/etc/hosts" || echo "127.0.1.1 $netns" >> "$root/etc/hosts"
    install -d -m 0755 "$root/var/lib/xdplb-lab"
    touch "$known" && chmod 0600 "$known"
    ssh-keygen -R "$netns" -f "$known" >/dev/null 2>&1 || true
    rm -f "$known.old"
    echo "$netns $(cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_ed25519_key.pub")" >> "$known"
    # setsid: the host outlives the task that started it. The PID is ip's, which execs unshare;
    # --kill-child: when unshare is killed, so is the host's PID 1, and with it the whole host.
    setsid ip netns exec "$netns" unshare --mount --pid --uts --ipc --fork --kill-child -- \
        "$(readlink -f "$0")" boot "$root" "$netns" </dev/null >"$dir/sshd.log" 2>&1 &
    pid=$!
    echo "$pid" > "$dir/sshd.pid"
    for _ in $(seq 100); do
        if ip netns exec "$netns" nc -z 127.0.0.1 22 2>/dev/null; then echo "started"; return; fi
        [[ -e "/proc/$pid" ]] || break
        sleep 0.1
    done
    cat "$dir/sshd.log" >&2
    die "sshd of $netns did not come up"
}

boot() {
    local root=$1
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount -t bpf bpf "$root/sys/fs/bpf"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
    install -d -m 0755 "$root/run/sshd"
    hostname "$2"
    # bash stays PID 1: it reaps the orphans (the lab responder's daemons) that sshd would not.
    chroot "$root" /usr/sbin/sshd -D -e &
    wait
}

stop() {
    local dir=$1 pid
    [[ -d "$dir" ]] || { echo "absent"; return; }
    if running "$dir"; then
        pid=$(cat "$dir/sshd.pid")
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 100); do [[ -e "/proc/$pid" ]] || break; sleep 0.05; done
    fi
    rm -f "$dir/sshd.pid"
    if mountpoint -q "$dir/root"; then
        # The host's own mounts went with its mount namespace; only the overlay is left.
        for _ in $(seq 50); do umount "$dir/root" 2>/dev/null && break; sleep 0.1; done
        ! mountpoint -q "$dir/root" || die "cannot unmount $dir/root"
        echo "stopped"
    else
        echo "absent"
    fi
}

stop_all() {
    local dir
    [[ -d "$1" ]] || return 0
    for dir in "$1"/*/ssh; do
        [[ -d "$dir" ]] && echo "$(basename "$(dirname "$dir")"): $(stop "$dir")"
    done
    return 0
}

command=${1:-}
shift || true
case "$command" in
    image) (($# >= 1)) || die "usage: image IMAGE_DIR PACKAGE..."; image "$@" ;;
    start) (($# == 5)) || die "usage: start IMAGE_DIR HOST_DIR NETNS PUBKEY KNOWN_HOSTS"; start "$@" ;;
    boot) (($# == 2)) || die "usage: boot ROOT HOSTNAME"; boot "$@" ;;
    stop) (($# == 1)) || die "usage: stop HOST_DIR"; stop "$@" ;;
    stop-all) (($# == 1)) || die "usage: stop-all STATE_ROOT"; stop_all "$@" ;;
    *) die "usage: ssh_host.sh image|start|stop ..." ;;
esac
