// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// exec events through a BPF ring buffer: when (CLOCK_MONOTONIC), pid, ppid, uid, comm, filename, argv;
// optional pid and cgroup filters. The parent's tgid, the argument block and (at the raw tracepoint)
// bprm->filename are read with CO-RE (BPF_CORE_READ), so the one committed object loads on any kernel with
// BTF whatever its struct layouts; vmlinux.h comes from `make bpf`. Two entry points: the raw tracepoint
// sched_process_exec (BPF_RAW_TRACEPOINT_OPEN, Linux >= 4.17: needs no tracefs) and the
// sched:sched_process_exec tracepoint through tracefs (the fallback). The loader autoloads only the one it uses.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define TASK_COMM_LEN 16
#define FILENAME_LEN 256
#define FILENAME_TRUNCATED 1  // the path is longer than FILENAME_LEN - 1 bytes: filename holds its start
// The argument block (argv strings, each NUL-terminated, back to back) is copied up to ARGS_LEN bytes, as
// libbpf-tools' execsnoop bounds its copy; user space keeps the first arguments that fit whole.
#define ARGS_LEN 1024

struct exec_event {
	__u64 monotonic_ns;  // bpf_ktime_get_ns(): CLOCK_MONOTONIC, which user space turns into wall time
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 flags;  // FILENAME_TRUNCATED
	__u32 args_copied;  // bytes of args filled
	__u32 args_total;   // the whole argument block's size (arg_end - arg_start)
	char comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN];
	char args[ARGS_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

// Events dropped because the ring buffer was full (user space fell behind): lost[0], per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct exec_filter {
	__u32 pid;     // only execs of this process or of its children; 0 = every process
	__u32 cgroup;  // 1: only tasks under the cgroup in cgroup_filter[0]
};

// exec_config[0]: written by user space after load, before attach.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_filter);
} exec_config SEC(".maps");

// The cgroup (v2) of --cgroup, as the fd of its directory: bpf_current_task_under_cgroup() matches it
// and its descendants, on the cgroup2 hierarchy only.
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_filter SEC(".maps");

static __always_inline int emit(const char *filename)
{
	__u32 key = 0;
	struct exec_filter *want = bpf_map_lookup_elem(&exec_config, &key);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u32 ppid = BPF_CORE_READ(task, real_parent, tgid);

	if (want && want->pid && want->pid != pid && want->pid != ppid)
		return 0;
	if (want && want->cgroup && bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1)
		return 0;
	struct exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u64 *n = bpf_map_lookup_elem(&lost, &key);

		if (n)
			*n += 1;  // per-CPU value: no atomics needed
		return 0;
	}
	e->monotonic_ns = bpf_ktime_get_ns();
	e->pid = pid;
	e->ppid = ppid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->flags = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename);
	if (n == FILENAME_LEN) {
		// The buffer is full: truncated unless the path is exactly FILENAME_LEN - 1 bytes long.
		char next = 0;

		bpf_probe_read_kernel(&next, 1, filename + FILENAME_LEN - 1);
		if (next)
			e->flags = FILENAME_TRUNCATED;
	}
	// sched_process_exec fires once the new image is set up: current->mm is the new one and its
	// arg_start..arg_end holds the argv strings exec just copied onto the new stack (resident pages).
	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
	__u64 total = arg_end > arg_start ? arg_end - arg_start : 0;
	__u32 copy = total < ARGS_LEN ? total : ARGS_LEN;

	e->args_total = total;
	e->args_copied = 0;
	if (copy && bpf_probe_read_user(e->args, copy & (2 * ARGS_LEN - 1), (void *)arg_start) == 0)
		e->args_copied = copy;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

// TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm): the tracefs event's
// filename is bprm->filename.
SEC("raw_tracepoint/sched_process_exec")
int raw_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];

	return emit(BPF_CORE_READ(bprm, filename));
}

SEC("tracepoint/sched/sched_process_exec")
int on_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	unsigned int fname_off = ctx->__data_loc_filename & 0xFFFF;

	return emit((const char *)ctx + fname_off);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
