#!/usr/bin/env bash
# Installs the system tools the demo and the tests need, if any is missing.
# On Debian/Ubuntu as root it uses apt-get; elsewhere it says what to install.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [ip]=iproute2
  [iptables]=iptables
  [wg]=wireguard-tools
  [ping]=iputils-ping
  [wireguard-go]=wireguard-go
  [wg-quick]=wireguard-tools
  [nsenter]=util-linux
  [unshare]=util-linux
  [bash]=bash
  [rpm]=rpm
  [dpkg-deb]=dpkg
  [systemd-analyze]=systemd
  [iperf3]=iperf3
  [gpg]=gpg
  [systemd-nspawn]=systemd-container
  [mmdebstrap]=mmdebstrap
  [tar]=tar
  [bridge]=iproute2
  [iptables-legacy-restore]=iptables
  [qemu-system-x86_64]=qemu-system-x86
  [depmod]=kmod
  [ss]=iproute2
  [sysctl]=procps
  [lsmod]=kmod
)

# `deps.sh real`: what a real k3s needs besides (make real-test, the demo
# with WGK3S_K3S_BINARY): runc, the CNI plugins, busybox for the pods.
if [ "${1:-}" = real ]; then
  need[runc]=runc
  need[busybox]=busybox-static
fi

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if [ "${1:-}" = real ] && [ ! -x /usr/lib/cni/host-local ]; then
  missing+=(containernetworking-plugins)
fi
if ! command -v go >/dev/null 2>&1; then
  echo "deps: Go is not on PATH; install Go 1.26 or later (https://go.dev/doc/install) and retry" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # --no-install-recommends: wireguard-tools would otherwise pull in a kernel.
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "deps: missing packages: ${missing[*]}" >&2
echo "deps: on Debian/Ubuntu run as root: apt-get install --no-install-recommends ${missing[*]}" >&2
echo "deps: on Fedora/RHEL: dnf install iproute iptables-legacy iptables-nft wireguard-tools iputils util-linux rpm dpkg systemd iperf3 gnupg2 systemd-container mmdebstrap qemu-system-x86 kmod (wireguard-go: build it from source)" >&2
exit 1
