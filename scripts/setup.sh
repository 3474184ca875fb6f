#!/usr/bin/env bash
# The one set-up step behind `make setup`, `make demo` and `make test`.
# Idempotent: installs only what is missing, starts the Docker engine only when
# none answers. With everything in place it takes well under 5 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/.workbench
mkdir -p "$STATE"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: run as root, or install sudo" >&2; exit 1; }
    SUDO="sudo"
fi

# Debian packages: what each capability runs.
PACKAGES=(
    docker.io               # the engine bakes, releases and sandboxes run on
    docker-registry         # the local registry released images are pushed to
    apt-cacher-ng           # the local package cache bakes fetch through
    packer                  # bakes (docker and qemu builders, salt-masterless)
    vagrant                 # sandboxes
    qemu-system-x86 qemu-utils  # qcow2 bakes and the netboot VM
    syslinux syslinux-common mtools dosfstools  # the qemu builder's bootable vanilla disk, made without loop mounts
    debootstrap             # the vanilla base
    dnsmasq-base ipxe       # the netboot node: DHCP, TFTP, DNS; iPXE loaders
    squashfs-tools          # the live image's root filesystem
    nfs-ganesha nfs-ganesha-vfs  # the nodes' persistence (NFSv4 in userspace: no nfsd in this kernel)
    ovmf                    # UEFI firmware for the netboot test's UEFI VM
    busybox-static e2fsprogs  # the cloud's smoke-test server image, made here (fab cloud.test)
    iproute2 git make curl ca-certificates openssh-client
    python3 python3-venv
)
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    # No service starts at install time: the workbench starts its daemons itself.
    echo -e '#!/bin/sh\nexit 101' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1 \
        || { echo "setup: apt-get install failed, see $STATE/apt.log" >&2; tail -20 "$STATE/apt.log" >&2; exit 1; }
    $SUDO rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

# The Python environment: reinstalled only when pyproject.toml changes.
PYTHON=/usr/bin/python3
stamp="$ROOT/.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing the workbench and its Python dependencies into .venv"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[dev]'
    grep -q "workbench.cli" .venv/bin/fab || { echo "setup: .venv/bin/fab is not the workbench's" >&2; exit 1; }
    rm -f .venv/.installed-*
    touch "$stamp"
fi

# The Docker engine: started here when none answers (no systemd on these machines).
if ! docker info >/dev/null 2>&1; then
    log="$STATE/dockerd.log"
    echo "setup: no Docker engine answers; starting dockerd (log: $log)"
    # A cold machine can be slow enough that dockerd gives up waiting for its
    # containerd and exits; a second start finds the files cached and comes up.
    for attempt in 1 2; do
        $SUDO setsid nohup dockerd >>"$log" 2>&1 </dev/null &
        pid=$!
        for _ in $(seq 1 120); do
            docker info >/dev/null 2>&1 && break 2
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null && break
        [ "$attempt" = 1 ] && echo "setup: dockerd exited before answering (log: $log); starting it again"
    done
    docker info >/dev/null 2>&1 || { echo "setup: dockerd did not come up, see $log" >&2; tail -20 "$log" >&2; exit 1; }
    echo "setup: Docker engine ready"
fi
