// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// On-CPU stack sampling: attached to a software cpu-clock perf event on every online CPU, each sample
// adds one to counts[(tgid, comm, user stack id, kernel stack id)]; the stacks themselves live in a
// BPF_MAP_TYPE_STACK_TRACE map that user space reads and symbolises. Samples and stacks the maps had no
// room for are counted per CPU in `stats`, never dropped silently.
//
// The cgroup filter reads the interrupted task's cgroup with CO-RE: on the unified (v2) hierarchy
// through css_set->dfl_cgrp, on a v1 hierarchy through the css_set->subsys[] entry whose cgroup's root
// has the target's hierarchy id; then it compares the ancestor at the target's depth
// (cgroup->ancestors[], Linux >= 6.1) with the target's kernfs id (the directory's inode number).
// bpf_get_current_cgroup_id() sees only v2, and a cgroup array (bpf_current_task_under_cgroup) refuses
// v1 directories: this must work on hosts that mount only v1 controllers.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define TASK_COMM_LEN 16
#define MAX_STACK_DEPTH 127  // the kernel's default perf_event_max_stack
#define MAX_SUBSYS 32
#define MAX_LEVEL 64
#define EFAULT 14
#define ENOMEM 12
#define EEXIST 17

#define CGROUP_NONE 0
#define CGROUP_V2 1
#define CGROUP_V1 2

// stats[] indices, per CPU (user space sums them): keep in step with profile.py.
enum {
	STAT_SAMPLES,            // samples that passed the filters
	STAT_IDLE,               // samples of the idle task (not recorded)
	STAT_KSTACK_COLLISION,   // kernel stack lost: another stack holds its hash bucket (-EEXIST)
	STAT_KSTACK_FULL,        // kernel stack lost: the stack map is full (-ENOMEM)
	STAT_KSTACK_OTHER,       // kernel stack lost: any other error
	STAT_USTACK_COLLISION,
	STAT_USTACK_FULL,
	STAT_USTACK_OTHER,
	STAT_COUNTS_FULL,        // whole sample lost: the counts map is full
	STAT_MAX,
};

struct profile_config {
	__u32 tgid;          // 0: every process
	__u32 cgroup_mode;   // CGROUP_NONE, CGROUP_V2, CGROUP_V1
	__u32 hierarchy_id;  // v1: the target's hierarchy (/proc/cgroups' second column)
	__u32 level;         // the target's depth below its hierarchy's root
	__u64 cgroup_id;     // the target's kernfs id
};

struct sample_key {
	__u32 pid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct profile_config);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct sample_key);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void bump(__u32 index)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &index);

	if (n)
		*n += 1;  // per-CPU slot, and a perf event does not nest on its CPU: no atomics needed
}

static __always_inline int in_cgroup(const struct profile_config *cfg)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct css_set *cset = BPF_CORE_READ(task, cgroups);
	struct cgroup *cgrp = NULL;
	__u32 level = cfg->level;

	if (!cset || level >= MAX_LEVEL)
		return 0;
	if (cfg->cgroup_mode == CGROUP_V2) {
		cgrp = BPF_CORE_READ(cset, dfl_cgrp);
	} else {
		// The task's cgroup on the target's v1 hierarchy: the one of its controllers' states whose
		// cgroup belongs to that hierarchy. Bounded by the kernel's own CGROUP_SUBSYS_COUNT (the size
		// of css_set->subsys, relocated), so no read runs past the array.
		__u32 count = bpf_core_field_size(cset->subsys) / sizeof(void *);
		unsigned long base = bpf_core_field_offset(cset->subsys);

		for (__u32 i = 0; i < MAX_SUBSYS && i < count; i++) {
			struct cgroup_subsys_state *css = NULL;
			struct cgroup *candidate;

			bpf_probe_read_kernel(&css, sizeof(css), (char *)cset + base + i * sizeof(css));
			if (!css)
				continue;
			candidate = BPF_CORE_READ(css, cgroup);
			if (candidate && BPF_CORE_READ(candidate, root, hierarchy_id) == (int)cfg->hierarchy_id) {
				cgrp = candidate;
				break;
			}
		}
	}
	if (!cgrp)
		return 0;
	int depth = BPF_CORE_READ(cgrp, level);
	if (depth < 0 || (__u32)depth < level)
		return 0;
	struct cgroup *ancestor = NULL;
	bpf_probe_read_kernel(&ancestor, sizeof(ancestor),
			      (char *)cgrp + bpf_core_field_offset(struct cgroup, ancestors) + level * sizeof(ancestor));
	if (!ancestor)
		return 0;
	return BPF_CORE_READ(ancestor, kn, id) == cfg->cgroup_id;
}

static __always_inline void count_stack_error(long id, __u32 collision)
{
	// -EFAULT is no stack at all, not a loss: a sample in user mode has no kernel stack, a kernel
	// thread no user stack.
	if (id >= 0 || id == -EFAULT)
		return;
	if (id == -EEXIST)
		bump(collision);
	else if (id == -ENOMEM)
		bump(collision + 1);
	else
		bump(collision + 2);
}

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	__u32 zero = 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct profile_config *cfg = bpf_map_lookup_elem(&settings, &zero);

	if (!cfg)
		return 0;
	if (cfg->tgid && cfg->tgid != tgid)
		return 0;
	if (cfg->cgroup_mode != CGROUP_NONE && !in_cgroup(cfg))
		return 0;
	if ((__u32)pid_tgid == 0) {  // the idle task (swapper/N): the CPU had nothing to run
		bump(STAT_IDLE);
		return 0;
	}
	bump(STAT_SAMPLES);

	struct sample_key key = {};
	key.pid = tgid;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.kernel_stack_id = bpf_get_stackid(ctx, &stacks, 0);
	key.user_stack_id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	count_stack_error(key.kernel_stack_id, STAT_KSTACK_COLLISION);
	count_stack_error(key.user_stack_id, STAT_USTACK_COLLISION);

	__u64 *n = bpf_map_lookup_elem(&counts, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	__u64 one = 1;
	// BPF_NOEXIST: if another CPU created the entry meanwhile, the lookup below adds to it.
	if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST) != 0) {
		n = bpf_map_lookup_elem(&counts, &key);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			bump(STAT_COUNTS_FULL);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
