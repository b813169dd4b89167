// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Per-CPU packet and byte counts by protocol. Always returns XDP_PASS: it observes, never drops.
// No kernel structs are read (only packet bytes), so no CO-RE relocation and no vmlinux.h.
#include "packet_protocol.h"

// One value holds every counter, so user space reads all of them with one bpf() lookup. Indexing it by
// a slot computed on several paths is pointer arithmetic the verifier allows only with CAP_PERFMON,
// which XDP needs anyway (the frame length is a pointer subtraction).
struct protocol_stats {
	__u64 packets[P_COUNT];
	__u64 bytes[P_COUNT];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct protocol_stats);
} xdp_stats SEC(".maps");

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0;

	struct protocol_stats *stats = bpf_map_lookup_elem(&xdp_stats, &key);
	int slot = protocol_slot(data, data_end);
	if (stats && slot >= 0 && slot < P_COUNT) {
		stats->packets[slot] += 1;  // per-CPU value: no atomics needed
		stats->bytes[slot] += data_end - data;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
