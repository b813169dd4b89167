// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Feature probe, not a built-in: loading it proves the kernel accepts BPF LSM programs (attached
// through a BPF trampoline, as fentry) on the hook the exec guard uses. Whether the hook then runs is
// another question, answered by "bpf" in /sys/kernel/security/lsm: a kernel loads and attaches LSM
// programs even when bpf is not an active LSM, and then never calls them.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("lsm/bprm_check_security")
int probe_lsm(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
