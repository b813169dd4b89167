#!/usr/bin/env bash
# Installs the system packages hypermesh's build, tests and benchmarks need, only when missing.
# Run as root (CI and the dev machines are root); as another user it prints what is missing and stops.
# Usage: scripts/deps.sh [group...]   groups: base bpf prom browser vm (default: all)
set -euo pipefail

declare -A GROUP=(
  [base]="iproute2 util-linux libcap2-bin procps e2fsprogs btrfs-progs"
  [bpf]="libbpf1 libbpf-dev clang llvm bpftool linux-libc-dev bpftrace"
  [prom]="prometheus prometheus-node-exporter"
  [browser]="chromium"
  [vm]="qemu-system-x86 busybox-static linux-image-amd64"
)
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(base bpf prom browser vm)

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
