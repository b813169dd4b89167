// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Feature probe, not a built-in: loading it proves the kernel accepts fentry (BPF trampoline)
// programs against its own BTF. libbpf's generic program-type probe cannot tell (it answers "no" on
// 6.18 and "yes" on 6.1), because a tracing program needs a real attach target to load at all.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("fentry/vfs_read")
int probe_fentry(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
