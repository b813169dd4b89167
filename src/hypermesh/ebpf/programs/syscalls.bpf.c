// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Syscall counts per syscall number and per process, with optional pid and cgroup filters applied in the
// kernel. Three entry points fill the same maps: a kprobe on x64_sys_call (x86-64 kernels with
// CONFIG_KPROBES; the dispatcher added in 6.9 and backported to the 6.1/6.6 stable series), the raw
// tracepoint sys_enter (BPF_RAW_TRACEPOINT_OPEN, Linux >= 4.17: needs no tracefs) and the
// raw_syscalls:sys_enter tracepoint through tracefs (the fallback for older kernels). The loader
// autoloads only the one it uses.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16
#define MAX_SYSCALLS 512  // x86-64 numbers end below 470; arm64 below 460

// The raw_syscalls:sys_enter record (tracefs format file); stable since 2.6.32.
struct sys_enter_args {
	__u64 common;
	long id;
	unsigned long args[6];
};

// The process's name may change at these syscalls (an exec, or prctl(PR_SET_NAME)).
#if defined(__TARGET_ARCH_arm64)
#define NR_EXECVE 221
#define NR_EXECVEAT 281
#define NR_PRCTL 167
#else
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define NR_PRCTL 157
#endif

struct proc_count {
	__u64 count;
	char comm[TASK_COMM_LEN];  // the main thread's name (user space reads count and comm only)
	__u64 refresh;             // set at a syscall that may rename; the main thread's next one re-reads
};

struct filter {
	__u32 tgid;    // count only this process; 0 = every process
	__u32 cgroup;  // 1: count only tasks under the cgroup in cgroup_filter[0]
};

// config[0]: written by user space after load, before attach.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter);
} config SEC(".maps");

// The cgroup (v2) of --cgroup, as the fd of its directory. bpf_current_task_under_cgroup() matches
// the cgroup and its descendants (a service's cgroup with its children); it works on the cgroup2
// hierarchy only, as bpf_get_current_cgroup_id() does.
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_filter SEC(".maps");

// One value holds every syscall's counter (4 KiB per CPU), so user space reads the whole table with one
// bpf() lookup: a 512-entry array took 512 copies even through BPF_MAP_LOOKUP_BATCH (~0.2 ms).
struct syscall_table {
	__u64 counts[MAX_SYSCALLS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syscall_table);
} syscall_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);  // created in µs instead of ms; entries allocated on use
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct proc_count);
} process_counts SEC(".maps");

// Syscalls of processes that found process_counts full (its max_entries): untracked[0], per CPU.
// They are in syscall_counts (the total) but in no process's count.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} untracked SEC(".maps");

static __always_inline int count(long id)
{
	__u32 key = 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	int leader = (__u32)pid_tgid == tgid;
	struct filter *want = bpf_map_lookup_elem(&config, &key);

	if (want && want->tgid && want->tgid != tgid)
		return 0;
	if (want && want->cgroup && bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1)
		return 0;
	if (id >= 0 && id < MAX_SYSCALLS) {
		struct syscall_table *table = bpf_map_lookup_elem(&syscall_counts, &key);
		if (table)
			table->counts[id & (MAX_SYSCALLS - 1)] += 1;  // per-CPU value: no atomics needed
	}
	struct proc_count *pc = bpf_map_lookup_elem(&process_counts, &tgid);
	if (pc) {
		__sync_fetch_and_add(&pc->count, 1);
		// A child a shell forks makes its first syscalls as "bash", then execs: the exec'ing thread
		// becomes the main thread, and its next syscall brings the new name.
		if (id == NR_EXECVE || id == NR_EXECVEAT || id == NR_PRCTL) {
			pc->refresh = 1;
		} else if (pc->refresh && leader) {
			bpf_get_current_comm(pc->comm, sizeof(pc->comm));
			pc->refresh = 0;
		}
	} else {
		// Created by another thread: its name is a thread's, until the main thread's next syscall.
		struct proc_count fresh = {.count = 1, .refresh = !leader};
		bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
		// BPF_NOEXIST: if another CPU created it meanwhile, the lookup below adds to its entry.
		if (bpf_map_update_elem(&process_counts, &tgid, &fresh, BPF_NOEXIST) != 0) {
			pc = bpf_map_lookup_elem(&process_counts, &tgid);
			if (pc) {
				__sync_fetch_and_add(&pc->count, 1);
			} else {  // the table is full
				__u64 *n = bpf_map_lookup_elem(&untracked, &key);

				if (n)
					*n += 1;  // per-CPU value: no atomics needed
			}
		}
	}
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int on_sys_enter(struct sys_enter_args *ctx)
{
	return count(ctx->id);
}

// TP_PROTO(struct pt_regs *regs, long id): args[1] is the syscall number.
SEC("raw_tracepoint/sys_enter")
int raw_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	return count((long)ctx->args[1]);
}

SEC("kprobe/x64_sys_call")
int on_x64_sys_call(struct pt_regs *ctx)
{
	// long x64_sys_call(const struct pt_regs *regs, unsigned int nr)
	return count((long)(unsigned int)PT_REGS_PARM2(ctx));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
