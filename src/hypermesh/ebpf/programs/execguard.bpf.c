// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Exec guard: a BPF LSM program on bprm_check_security that, for tasks inside one cgroup v2 subtree,
// reports (audit) or refuses with -EPERM (enforce) the execution of files under denied path prefixes,
// and streams each such decision through a ring buffer.
//
// Choices, and why:
// - Membership: bpf_current_task_under_cgroup() against a cgroup array holding the target cgroup's fd.
//   It answers for the cgroup and its descendants (a container's nested cgroups stay guarded) without
//   knowing the target's level or id, and the map keeps the cgroup referenced. Like every BPF cgroup
//   helper it looks at the cgroup v2 (default) hierarchy only: on a host whose controllers are v1, the
//   target must be a directory of a cgroup2 mount (user space checks that).
// - Path: bpf_d_path(&bprm->file->f_path), the file the kernel is about to run, resolved (symlinks,
//   relative names, /dev/fd/N of fexecve, /proc/self/exe). bprm->filename is what the caller passed to
//   execve and can name the same file many ways, so a prefix on it is trivially bypassed. bpf_d_path is
//   allowed in LSM programs on the hooks the kernel marks sleepable, bprm_check_security among them
//   (bpf_d_path_allowed(), 5.11+). Its path is relative to the task's root (chroot, container).
// - A path bpf_d_path cannot produce (longer than PATH_LEN) fails closed: refused in enforce mode,
//   reported with the name execve was given and the unresolved flag.
// - The decision never depends on the ring buffer: a full ring loses the event (counted), not the guard.
//   The path buffer is task-local storage, not a per-CPU scratch: an LSM program runs with migration
//   disabled but may be preempted (PREEMPT_DYNAMIC kernels can run preempt=full), and another exec on
//   the same CPU could then overwrite a per-CPU buffer between the match and the verdict.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define EPERM 1
#define TASK_COMM_LEN 16
#define PATH_LEN 4096     // PATH_MAX
#define PREFIX_LEN 256    // a prefix and its NUL; user space refuses longer ones
#define MAX_PREFIXES 16

#define MODE_AUDIT 0
#define MODE_ENFORCE 1
#define ACTION_AUDIT 1
#define ACTION_DENY 2
#define FLAG_UNRESOLVED 1  // bpf_d_path failed: filename is what execve was given
#define NO_PREFIX 0xffffffff

enum guard_stat { STAT_CHECKED, STAT_MATCHED, STAT_LOST, STAT_NO_BUFFER, STAT_COUNT };

// A denied prefix without its trailing '/' ("/" itself has len 0), NUL-padded to PREFIX_LEN: it matches
// the path equal to it and every path below it, never "/tmp/denied" for "/tmp/den".
struct guard_prefix {
	__u32 len;
	__u32 pad;
	char path[PREFIX_LEN];
};

// Everything user space sets, in one value: one lookup per exec, and the prefix loop indexes an array
// in a register (6.1's verifier loses the bounds of a loop index spilled to the stack for a map key,
// and then reports an infinite loop).
struct guard_rules {
	__u32 mode;
	__u32 count;  // prefixes in use
	struct guard_prefix prefix[MAX_PREFIXES];
};

struct guard_event {
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 action;  // ACTION_*
	__u32 prefix;  // index of the prefix that matched, NO_PREFIX when unresolved
	__u32 flags;   // FLAG_*
	__u64 cgroup_id;
	char comm[TASK_COMM_LEN];  // the task asking for the exec (its name before the exec)
	char filename[PATH_LEN];   // sent up to its NUL only
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_rules);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct guard_event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &which);

	if (n)
		*n += 1;  // per-CPU value: no atomics needed
}

// Compared 8 bytes at a time: 32 steps for the longest prefix instead of 256.
static __always_inline int prefix_matches(const char *path, const struct guard_prefix *p)
{
	const __u64 *have = (const __u64 *)path;
	const __u64 *want = (const __u64 *)p->path;
	__u32 len = p->len;

	if (len >= PREFIX_LEN)
		return 0;
	for (__u32 w = 0; w < PREFIX_LEN / 8; w++) {
		__u32 at = w * 8;

		if (at >= len)
			break;
		__u64 word = have[w];
		__u32 rest = len - at;

		if (rest < 8)
			word &= (1ULL << (rest * 8)) - 1;  // little-endian: the first `rest` bytes
		if (word != want[w])
			return 0;
	}
	char next = path[len & (PREFIX_LEN - 1)];

	return next == '/' || next == '\0';  // whole path components only
}

SEC("lsm/bprm_check_security")
int BPF_PROG(check_exec, struct linux_binprm *bprm, int ret)
{
	if (ret != 0)
		return ret;  // another BPF LSM program refused it already
	if (bpf_current_task_under_cgroup(&target, 0) != 1)
		return 0;

	__u32 zero = 0;
	struct guard_rules *r = bpf_map_lookup_elem(&rules, &zero);

	if (!r)
		return 0;
	int enforce = r->mode == MODE_ENFORCE;

	count(STAT_CHECKED);
	struct guard_event *e =
		bpf_task_storage_get(&scratch, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!e) {
		count(STAT_NO_BUFFER);  // no memory for the path: fail closed, nothing to report it with
		return enforce ? -EPERM : 0;
	}

	__u32 matched = NO_PREFIX;
	long n = bpf_d_path((struct path *)&bprm->file->f_path, e->filename, PATH_LEN);

	e->flags = 0;
	if (n <= 0) {
		n = bpf_probe_read_kernel_str(e->filename, PATH_LEN, bprm->filename);
		e->flags = FLAG_UNRESOLVED;
	} else {
		__u32 used = r->count;

		for (__u32 i = 0; i < MAX_PREFIXES; i++) {
			if (i >= used)
				break;
			if (prefix_matches(e->filename, &r->prefix[i])) {
				matched = i;
				break;
			}
		}
		if (matched == NO_PREFIX)
			return 0;
	}

	count(STAT_MATCHED);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->action = enforce ? ACTION_DENY : ACTION_AUDIT;
	e->prefix = matched;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (n < 0)
		n = 0;
	if (n > PATH_LEN)
		n = PATH_LEN;
	if (bpf_ringbuf_output(&events, e, __builtin_offsetof(struct guard_event, filename) + n, 0))
		count(STAT_LOST);
	return enforce ? -EPERM : 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
