#!/usr/bin/env bash
# Build the execution environment with podman on a machine that cannot pull quay.io/ansible/awx-ee
# (no container registry reachable) and run jobs in it through ansible-runner's process isolation,
# the way AWX runs them. Not part of `make test` (about 3 minutes plus 2 for the base image, and it
# needs deb.debian.org and PyPI); docs/awx.md, "Execution environment", has the results.
#   tests/ee/build_and_run.sh [WORKDIR]        (root; default WORKDIR /tmp/xdplb-ee)
# The base image is a local Debian 12 (debootstrap) instead of awx-ee, so the build arguments switch
# the package manager to apt-get. Two things this base needs that awx-ee has: an ensurepip that
# does not refuse (Debian disables it; pip comes from python3-pip) and the machine's CA bundle
# (HTTPS may go through a proxy whose CA only the host trusts).
# The podman flags are what this sandbox needs: crun cannot run here ("cgroups in hybrid mode not
# supported") and the default rlimits exceed what the sandbox allows ("setrlimit RLIMIT_NOFILE:
# Operation not permitted"), so runc with the sandbox's own limits.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-/tmp/xdplb-ee}"
venv="$repo/.venv/bin"
base=localhost/xdplb-ee-base:12
image=localhost/xdplb-katran-ee:test
run_flags=(--runtime=runc "--ulimit=nofile=$(ulimit -Hn):$(ulimit -Hn)" "--ulimit=nproc=1024:1024")

need=()
for pkg in podman runc uidmap fuse-overlayfs slirp4netns debootstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"
fi
mkdir -p "$work"

if ! podman image exists "$base"; then
    rootfs="$work/rootfs"
    [[ -x "$rootfs/usr/bin/python3" ]] || debootstrap --variant=minbase --include=python3,python3-pip,python3-venv \
        bookworm "$rootfs" http://deb.debian.org/debian
    printf 'import sys\nsys.exit(0)  # pip is installed from Debian (python3-pip)\n' \
        > "$rootfs/usr/lib/python3.11/ensurepip/__main__.py"
    mkdir -p "$rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
    tar -C "$rootfs" -c --one-file-system . | podman import - "$base"
fi

cd "$work"
time "$venv/ansible-builder" build -f "$repo/execution-environment.yml" -c "$work/context" -t "$image" \
    --container-runtime podman -v 2 \
    --build-arg EE_BASE_IMAGE="$base" --build-arg PKGMGR=/usr/bin/apt-get --build-arg PKGMGR_PRESERVE_CACHE=always \
    --extra-build-cli-args "${run_flags[*]} --network host --pull=never"

# Jobs as AWX runs them: a private data directory, survey answers in env/extravars.
pdd="$work/job"
rm -rf "$pdd" && mkdir -p "$pdd/project" "$pdd/inventory" "$pdd/env"
cat > "$pdd/inventory/hosts.yml" <<'EOF'
all:
  children:
    balancers: {hosts: {lb1: {ansible_connection: local}}}
    backends: {hosts: {be1: {ansible_connection: local}}}
EOF
printf -- '- ansible.builtin.import_playbook: xdplb.katran.site\n' > "$pdd/project/site.yml"
cat > "$pdd/project/check.yml" <<'EOF'
- name: A module of the collection inside the EE
  hosts: localhost
  gather_facts: false
  tasks:
    - name: backend_check imports the engine from the installed module_utils
      xdplb.katran.backend_check:
        state_file: /nonexistent/backend.json
      register: check
    - name: It reports the missing deployment
      ansible.builtin.assert:
        that: check.status == "critical" and check.findings[0].check == "deployed"
EOF
echo '{"balancer_vips": [{"address": "10.99.0.10", "port": 70000, "reals": ["10.30.1.2"]}]}' > "$pdd/env/extravars"
runner=("$venv/ansible-runner" run "$pdd" --process-isolation --process-isolation-executable podman
        --container-image "$image" --container-option=--network=none --container-option=--user=0)
for flag in "${run_flags[@]}"; do runner+=("--container-option=$flag"); done

status=0
"${runner[@]}" -p check.yml >/dev/null || status=$?
echo "check.yml: rc=$status status=$(cat "$pdd"/artifacts/*/status)"
[[ $status -eq 0 ]] || exit 1
rm -rf "$pdd/artifacts"
status=0
"${runner[@]}" -p site.yml > "$work/site.out" || status=$?
echo "site.yml with port 70000: rc=$status status=$(cat "$pdd"/artifacts/*/status)"
grep -q 'balancer_vips\[0\].port: 70000 must be <= 65535' "$work/site.out"
[[ $status -eq 2 ]]
echo "OK: $image built; a job succeeds in it and a bad survey answer fails in the first play"
