#!/usr/bin/env bash
# Mounts tracefs, bpffs and securityfs where the kernel has them and they are not mounted yet (a fresh machine
# has none: without tracefs libbpf cannot resolve tracepoint ids; without bpffs nothing can be pinned; without
# securityfs /sys/kernel/security/lsm, which says whether BPF LSM is active, cannot be read).
# Needs root; as another user it says so and carries on (eBPF tests then skip outside CI).
set -u
mounted() { grep -qs " $1 " /proc/self/mounts; }
want() { # fstype mountpoint
  grep -qw "$1" /proc/filesystems || return 0
  mounted "$2" && return 0
  if [ "$(id -u)" -ne 0 ]; then echo "kernel-mounts.sh: $2 not mounted and not root; eBPF features will be limited" >&2; return 0; fi
  mkdir -p "$2" && mount -t "$1" "$1" "$2" || echo "kernel-mounts.sh: could not mount $1 on $2" >&2
}
want tracefs /sys/kernel/tracing
want bpf /sys/fs/bpf
want securityfs /sys/kernel/security  # /sys/kernel/security/lsm: whether BPF LSM is active
exit 0
