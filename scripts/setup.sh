#!/usr/bin/env bash
# Installs what fulcrum needs to build, test and run its lab, and reserves hugepages.
# Idempotent: safe to run any number of times; says what it did.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }

PACKAGES=(
  # build: DPDK 22.11 and what bindgen needs
  dpdk dpdk-dev libdpdk-dev clang libclang-dev pkg-config build-essential
  # lab and tests: namespaces, traffic, captures
  iproute2 procps iputils-ping curl iperf3 wrk tcpdump python3 ethtool psmisc python3-matplotlib
)

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "packages already installed"
fi

ver=$(pkg-config --modversion libdpdk 2>/dev/null || echo none)
say "DPDK (pkg-config libdpdk): $ver"

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install the Rust stable toolchain (rustup) and re-run"
  exit 1
fi

# Hugepages: the daemon and the virtio lab use them; the unit and pcap tests run with --no-huge.
want=${FULCRUM_HUGEPAGES:-512}
have=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
if [ "$have" -lt "$want" ]; then
  if echo "$want" | $SUDO tee /proc/sys/vm/nr_hugepages >/dev/null 2>&1; then
    say "reserved hugepages: $(cat /proc/sys/vm/nr_hugepages) (wanted $want)"
  else
    say "could not reserve hugepages (not root?); DPDK will run with --no-huge"
  fi
else
  say "hugepages already reserved: $have"
fi
if ! grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts; then
  $SUDO mkdir -p /dev/hugepages
  if $SUDO mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null; then
    say "mounted hugetlbfs on /dev/hugepages"
  else
    say "could not mount hugetlbfs; DPDK will run with --no-huge"
  fi
else
  say "hugetlbfs already mounted on /dev/hugepages"
fi
say "done"
