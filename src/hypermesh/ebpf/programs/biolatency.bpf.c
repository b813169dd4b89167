// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Block I/O latency (issue -> complete) as a log2 histogram of microseconds, per device.
// Two pairs of entry points fill the same histogram; the loader autoloads one pair:
// - the raw tracepoints block_rq_issue/block_rq_complete (BPF_RAW_TRACEPOINT_OPEN, Linux >= 4.17: no
//   tracefs needed). Their argument is the struct request: a request is timed by its address, and its
//   disk's dev_t is read with CO-RE (rq->q->disk since 5.16's removal of rq->rq_disk, rq->rq_disk before),
//   as the tracefs events compute it. Needs kernel BTF.
// - the tracefs tracepoints (the fallback: no raw tracepoints, or no BTF). They read only the leading
//   fields of the records (dev at 8, sector at 16), which have kept their offsets since 4.x; the fields
//   after them changed (ioprio in 6.10), so they are not used.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct bio_tp_args {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 sector;
};

// raw tracepoints: {request address, 0}; tracefs: {dev, sector}.
struct bio_request_key {
	__u64 id;
	__u64 sector;
};

struct bio_hist_key {
	__u32 dev;   // kernel dev_t: major << 20 | minor
	__u32 slot;  // floor(log2(latency in us)), 0 also holds < 1 us
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);  // created in µs instead of ms; entries allocated on use
	__uint(max_entries, 10240);
	__type(key, struct bio_request_key);
	__type(value, __u64);
} started SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);  // created in µs instead of ms; entries allocated on use
	__uint(max_entries, 4096);
	__type(key, struct bio_hist_key);
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

// Kernels before 5.16 keep the disk in the request itself.
struct request___rq_disk {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

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

static __always_inline void start(struct bio_request_key *key)
{
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&started, key, &now, BPF_ANY);
}

static __always_inline void complete(struct bio_request_key *key, __u32 dev)
{
	__u64 *begin = bpf_map_lookup_elem(&started, key);

	if (!begin)
		return;  // issued before we attached
	__u64 delta_ns = bpf_ktime_get_ns() - *begin;
	__u64 delta_us = delta_ns / 1000;
	bpf_map_delete_elem(&started, key);
	__u64 *sum = bpf_map_lookup_elem(&latency_sum_ns, &dev);
	if (sum)
		__sync_fetch_and_add(sum, delta_ns);
	else if (bpf_map_update_elem(&latency_sum_ns, &dev, &delta_ns, BPF_NOEXIST) != 0) {
		sum = bpf_map_lookup_elem(&latency_sum_ns, &dev);
		if (sum)
			__sync_fetch_and_add(sum, delta_ns);
	}
	struct bio_hist_key hk = {.dev = dev, .slot = log2_slot(delta_us)};
	__u64 one = 1;
	__u64 *count = bpf_map_lookup_elem(&latency_hist, &hk);
	if (count)
		__sync_fetch_and_add(count, 1);
	else if (bpf_map_update_elem(&latency_hist, &hk, &one, BPF_NOEXIST) != 0) {
		count = bpf_map_lookup_elem(&latency_hist, &hk);
		if (count)
			__sync_fetch_and_add(count, 1);
	}
}

// disk_devt(disk), as the tracefs events compute their dev field (0 without a disk).
static __always_inline __u32 request_dev(struct request *rq)
{
	struct gendisk *disk;

	if (bpf_core_field_exists(((struct request___rq_disk *)rq)->rq_disk))
		disk = BPF_CORE_READ((struct request___rq_disk *)rq, rq_disk);
	else
		disk = BPF_CORE_READ(rq, q, disk);
	if (!disk)
		return 0;
	return (__u32)BPF_CORE_READ(disk, major) << 20 | (__u32)BPF_CORE_READ(disk, first_minor);
}

// TP_PROTO(struct request *rq)
SEC("raw_tracepoint/block_rq_issue")
int raw_issue(struct bpf_raw_tracepoint_args *ctx)
{
	struct bio_request_key key = {.id = ctx->args[0]};

	start(&key);
	return 0;
}

// TP_PROTO(struct request *rq, blk_status_t error, unsigned int nr_bytes)
SEC("raw_tracepoint/block_rq_complete")
int raw_complete(struct bpf_raw_tracepoint_args *ctx)
{
	struct bio_request_key key = {.id = ctx->args[0]};

	complete(&key, request_dev((struct request *)ctx->args[0]));
	return 0;
}

SEC("tracepoint/block/block_rq_issue")
int on_issue(struct bio_tp_args *ctx)
{
	struct bio_request_key key = {.id = ctx->dev, .sector = ctx->sector};

	start(&key);
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int on_complete(struct bio_tp_args *ctx)
{
	struct bio_request_key key = {.id = ctx->dev, .sector = ctx->sector};

	complete(&key, ctx->dev);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
