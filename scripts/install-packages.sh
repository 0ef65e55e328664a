#!/usr/bin/env bash
# Install the Debian packages vmferry needs, with the virtualization stack named by $1:
#   modern  QEMU 10 and libvirt 11 from Debian 12's bookworm-backports suite (the default)
#   stock   Debian 12's own QEMU 7.2 and libvirt 9.0
# The other arguments are the remaining packages, taken from the machine's own suites.
# Switching stacks on a machine that has the other one installs (or downgrades to) the named
# stack's versions. Runs apt only when something is missing or on the other stack.
set -euo pipefail

stack=${1:-}
shift || true
case "$stack" in
modern | stock) ;;
*)
    echo "VMFERRY_STACK must be 'modern' or 'stock', not '$stack'" >&2
    exit 2
    ;;
esac

# The packages whose versions make the stack; their dependencies follow them.
STACK_PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu
    libvirt-clients libvirt-dev)
# libvirt 11 splits its daemon into driver packages that it only recommends: the interface
# driver (pre-flight reads the destination's bridges through it) and virtlockd with its
# plugin (the lab's hosts lock their disks, HA's second guard) are named; libvirt 9.0 has
# them in libvirt-daemon.
MODERN_ONLY=(libvirt-daemon-driver-interface libvirt-daemon-lock libvirt-daemon-plugin-lockd)
BACKPORTS_FILE=/etc/apt/sources.list.d/vmferry-backports.sources
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
codename=${VERSION_CODENAME:-}
if [ "$stack" = modern ] && [ "$codename" != bookworm ]; then
    # Only Debian 12 needs backports for QEMU 10 / libvirt 11; a newer release has them.
    echo "note: Debian '$codename' is not bookworm: its own QEMU and libvirt are used" >&2
    stack=distribution
fi

# Empty when not installed; dpkg-query fails for a package dpkg has never heard of, which
# under pipefail must not end the script (a fresh machine has never seen QEMU).
installed_version() {
    { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } |
        awk '/ok installed/ {print $4}'
}

# Is every stack package installed, from the wanted suite?
stack_ok=yes
wanted=("${STACK_PACKAGES[@]}")
[ "$stack" = modern ] && wanted+=("${MODERN_ONLY[@]}")
for p in "${wanted[@]}"; do
    v=$(installed_version "$p")
    case "$stack:$v" in
    *:) stack_ok=no ;;
    modern:*bpo*) ;;
    modern:*) stack_ok=no ;;
    stock:*bpo*) stack_ok=no ;;
    esac
done
missing=()
for p in "$@"; do
    [ -n "$(installed_version "$p")" ] || missing+=("$p")
done
# sshd for the lab's hosts and the SSH tests (each starts its own, on its own address).
have_sshd=$([ -n "$(installed_version openssh-server)" ] && echo yes || echo no)
if [ "$stack_ok" = yes ] && [ ${#missing[@]} -eq 0 ] && [ "$have_sshd" = yes ]; then
    exit 0
fi

if [ "$stack" = modern ] && [ ! -f "$BACKPORTS_FILE" ]; then
    # The same archive and keyring as the machine's own Debian sources, suite
    # bookworm-backports. Added as a file of its own: replacing the list would drop the
    # other suites. Backports packages are never installed unless asked for with -t.
    uri=http://deb.debian.org/debian
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    own=/etc/apt/sources.list.d/debian.sources
    if [ -f "$own" ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' "$own")
        keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$own")
    fi
    echo "adding the bookworm-backports suite ($uri) for QEMU 10 and libvirt 11"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$uri" "$keyring" >"$BACKPORTS_FILE"
fi

apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ "$have_sshd" = no ]; then
    # Installing it must not start a machine-wide sshd: service starts are held off while it
    # installs (unless the machine already holds them off) and the ssh service stays disabled.
    hold=/usr/sbin/policy-rc.d
    made_hold=no
    if [ ! -e "$hold" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$hold"
        chmod +x "$hold"
        made_hold=yes
    fi
    echo "installing openssh-server (its service left stopped and disabled)"
    apt-get install -y -qq --no-install-recommends openssh-server
    [ "$made_hold" = no ] || rm -f "$hold"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now ssh.service ssh.socket 2>/dev/null || true
    fi
fi
case "$stack" in
modern)
    echo "installing the modern stack (bookworm-backports): ${wanted[*]}"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${wanted[@]}"
    ;;
stock)
    # pkg/bookworm picks Debian 12's own version. Coming from the modern stack, every package
    # installed from backports moves back with it in the same command (apt will not mix
    # QEMU 7.2 with QEMU 10's data package), and those that Debian 12 does not have (libvirt
    # 11 split its daemon into more packages) are removed: a trailing '-' asks apt to.
    back=()
    for p in $(dpkg-query -W -f='${Package} ${Version}\n' | awk '$2 ~ /bpo/ {print $1}'); do
        if apt-cache madison "$p" | awk -F'|' '$3 ~ / bookworm\/|bookworm-(updates|security)\// \
                {found = 1} END {exit !found}'; then
            back+=("$p/bookworm")
        else
            back+=("$p-")
        fi
    done
    echo "installing the stock stack (bookworm): ${STACK_PACKAGES[*]}"
    [ ${#back[@]} -eq 0 ] || echo "moving back from bookworm-backports: ${back[*]}"
    apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "${STACK_PACKAGES[@]/%//bookworm}" "${back[@]}"
    # A removed backports package takes along files it had taken over from a Debian 12 one
    # (libvirt-common held libvirt0's CPU maps, and without them no guest starts): unpack
    # what moved back once more.
    moved=()
    for p in "${back[@]}"; do
        case "$p" in */bookworm) moved+=("$p") ;; esac
    done
    [ ${#moved[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends --reinstall \
        "${moved[@]}"
    ;;
distribution)
    apt-get install -y -qq --no-install-recommends "${STACK_PACKAGES[@]}"
    ;;
esac
for p in qemu-system-x86 libvirt-daemon; do
    echo "$p $(installed_version "$p")"
done
