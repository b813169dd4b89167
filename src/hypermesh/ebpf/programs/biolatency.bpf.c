// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Block I/O latency (issue -> complete) as a log2 histogram of microseconds, per device.
// Reads only the leading fields of the block tracepoint records (dev at 8, sector at 16), which have
// kept their offsets since 4.x; the fields after them changed (ioprio in 6.10), so they are not used.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct block_rq_args {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 sector;
};

struct request_key {
	__u32 dev;
	__u32 pad;
	__u64 sector;
};

struct hist_key {
	__u32 dev;   // kernel dev_t: major << 20 | minor
	__u32 slot;  // floor(log2(latency in us)), 0 also holds < 1 us
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);  // created in µs instead of ms; entries allocated on use
	__uint(max_entries, 10240);
	__type(key, struct request_key);
	__type(value, __u64);
} started SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);  // created in µs instead of ms; entries allocated on use
	__uint(max_entries, 4096);
	__type(key, struct hist_key);
	__type(value, __u64);
} latency_hist SEC(".maps");

// Sum of the latencies in ns per device: a Prometheus histogram needs its _sum, which the log2
// buckets cannot give back.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} latency_sum_ns SEC(".maps");

// floor(log2(v)) without a loop: the verifier sees straight-line code.
static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

SEC("tracepoint/block/block_rq_issue")
int on_issue(struct block_rq_args *ctx)
{
	struct request_key key = {.dev = ctx->dev, .sector = ctx->sector};
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&started, &key, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int on_complete(struct block_rq_args *ctx)
{
	struct request_key key = {.dev = ctx->dev, .sector = ctx->sector};
	__u64 *start = bpf_map_lookup_elem(&started, &key);

	if (!start)
		return 0;  // issued before we attached
	__u64 delta_ns = bpf_ktime_get_ns() - *start;
	__u64 delta_us = delta_ns / 1000;
	bpf_map_delete_elem(&started, &key);
	__u32 dev = ctx->dev;
	__u64 *sum = bpf_map_lookup_elem(&latency_sum_ns, &dev);
	if (sum)
		__sync_fetch_and_add(sum, delta_ns);
	else if (bpf_map_update_elem(&latency_sum_ns, &dev, &delta_ns, BPF_NOEXIST) != 0) {
		sum = bpf_map_lookup_elem(&latency_sum_ns, &dev);
		if (sum)
			__sync_fetch_and_add(sum, delta_ns);
	}
	struct hist_key hk = {.dev = ctx->dev, .slot = log2_slot(delta_us)};
	__u64 one = 1;
	__u64 *count = bpf_map_lookup_elem(&latency_hist, &hk);
	if (count)
		__sync_fetch_and_add(count, 1);
	else if (bpf_map_update_elem(&latency_hist, &hk, &one, BPF_NOEXIST) != 0) {
		count = bpf_map_lookup_elem(&latency_hist, &hk);
		if (count)
			__sync_fetch_and_add(count, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
