#!/usr/bin/env bash
# Installs the system packages hypermesh's build, tests and benchmarks need, only when missing.
# Run as root (CI and the dev machines are root); as another user it prints what is missing and stops.
# Usage: scripts/deps.sh [group...]   groups: base testing bpf prom browser cluster vm (default: these), fresh (make test-fresh)
# Every system package a test or a tool uses is named here: a fresh minimal Debian 12 has none of them
# (`make test-fresh` proves it on one).
set -euo pipefail

declare -A GROUP=(
  # python3-venv: `make venv` (ensurepip); mount: losetup; openssl: the TLS tests' certificates
  [base]="python3 python3-venv make iproute2 util-linux mount libcap2-bin procps openssl"
  # the tests' own file systems on loop devices (tests/block_device.py); `make run` needs none of them
  [testing]="e2fsprogs btrfs-progs"
  # gcc: `make bpf` asks it for the multiarch include dir, and a test builds a fake old libbpf with it
  [bpf]="libbpf1 libbpf-dev clang llvm bpftool linux-libc-dev bpftrace gcc libc6-dev"
  [prom]="prometheus prometheus-node-exporter"
  [browser]="chromium"
  # hypermesh cluster: membership and cluster-wide limits (the tests and make run-cluster start their own)
  [cluster]="etcd-server"
  # file: virtme-ng runs it on the kernel image it boots
  [vm]="qemu-system-x86 busybox-static linux-image-amd64 file"
  # make test-fresh: builds the minimal Debian 12 root it runs the suite in
  [fresh]="debootstrap"
)
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(base testing bpf prom browser cluster vm)

missing=()
for g in "${groups[@]}"; do
  [ -n "${GROUP[$g]+x}" ] || { echo "deps.sh: unknown group '$g' (known: ${!GROUP[*]})" >&2; exit 2; }
  for p in ${GROUP[$g]}; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing system packages: ${missing[*]}; run 'sudo make deps' (apt-get install as root)" >&2
  exit 3
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists; update once, then install (retry once on a transient mirror error).
apt-get update -qq >/dev/null || apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
# prometheus and node-exporter packages start services where systemd runs; tests start their own.
