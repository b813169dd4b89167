// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Per-CPU packet and byte counts by protocol in each direction of an interface, at the TC hooks.
// Both programs return TC_ACT_UNSPEC (TCX_NEXT): the verdict is left to whatever comes after them
// (the next tcx program, the clsact filters, the stack), so attaching them never changes traffic.
// No kernel structs are read beyond the skb context, so no CO-RE relocation and no vmlinux.h.
#include "packet_protocol.h"
#include <linux/pkt_cls.h>

// Key 0: ingress, 1: egress (hypermesh/ebpf/programs/tc.py, DIRECTIONS).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct protocol_stats);
} tc_stats SEC(".maps");

// At both hooks skb->data starts at the Ethernet header (the kernel pushes it back for ingress) and
// skb->len is the whole frame, paged data included, as the interface's byte counters count it.
static __always_inline int count(struct __sk_buff *skb, __u32 key)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	struct protocol_stats *stats = bpf_map_lookup_elem(&tc_stats, &key);
	if (stats)
		count_frame(stats, protocol_slot(data, data_end), skb->len);
	return TC_ACT_UNSPEC;
}

// The names are how a clsact filter left behind by a killed process is recognised as ours.
SEC("tc")
int hm_tc_ingress(struct __sk_buff *skb)
{
	return count(skb, 0);
}

SEC("tc")
int hm_tc_egress(struct __sk_buff *skb)
{
	return count(skb, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
