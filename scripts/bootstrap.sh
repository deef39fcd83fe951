#!/usr/bin/env bash
# One-command dev environment: Debian packages + a virtualenv with the Python tooling.
# Re-running is fast: packages are installed only when dpkg says they are missing and the
# virtualenv is rebuilt only when its requirements file (or the Python) changed.
#   scripts/bootstrap.sh            -> .venv  (default python3; ansible-core 2.19 on 3.11)
#   PYTHON=python3.12 VENV=.venv312 scripts/bootstrap.sh  -> second env (ansible-core 2.21)
#   PYTHON=python3.10 VENV=.build/venv217 REQUIREMENTS=requirements-oldest.txt scripts/bootstrap.sh
#                                   -> the oldest ansible-core claimed (2.17), test tools only
set -euo pipefail
cd "$(dirname "$0")/.."

# debootstrap, dpkg-dev and openssh-client: the SSH lab hosts (roles/lab/files/ssh_host.sh).
# bird2 and frr: the lab's BGP (BIRD on the balancers, FRR on the router, both in namespaces).
# prometheus: promtool for the alert rules' tests (tests/unit/test_prometheus_rules.py) and the
# lab's Prometheus server; the policy-rc.d below keeps its service from starting on the controller.
APT_PACKAGES=(clang llvm libbpf-dev libbpf1 bpftool iproute2 ethtool tcpdump netcat-openbsd
              socat make util-linux rsync shellcheck debootstrap dpkg-dev openssh-client bird2 frr
              prometheus)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    # The lab runs its own BIRD and FRR in namespaces, and promtool needs no server: the packages'
    # services (bird, frr, prometheus) must not start on the controller itself (a policy-rc.d that says 101 stops invoke-rc.d; an existing one is kept).
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        trap 'rm -f "$policy"' EXIT
        printf '#!/bin/sh\n# bootstrap.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
    fi
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ $(trap -p EXIT) ]]; then
        rm -f "$policy"
        trap - EXIT
    fi
fi

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
REQUIREMENTS="${REQUIREMENTS:-requirements-dev.txt}"
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)-$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x "$VENV/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "bootstrap: building $VENV with $PYTHON"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r "$REQUIREMENTS"
    echo "$want" > "$stamp"
fi

# The collection must live under ansible_collections/<ns>/<name>; a symlink keeps the checkout
# the single source of truth for playbooks, molecule and pytest.
mkdir -p .build/collections/ansible_collections/xdplb
ln -sfn "$(pwd)" .build/collections/ansible_collections/xdplb/katran

# bpffs is not mounted on every machine (no systemd here); BPF pins need it.
if ! mountpoint -q /sys/fs/bpf; then
    mount -t bpf bpf /sys/fs/bpf
fi
echo "bootstrap: ready ($VENV, ansible-core $("$VENV/bin/python" -c "import ansible.release as r; print(r.__version__)"))"
