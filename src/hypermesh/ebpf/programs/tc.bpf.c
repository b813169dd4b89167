// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Per-CPU packet and byte counts by protocol in each direction of an interface, at the TC hooks.
// Both programs return TC_ACT_UNSPEC (TCX_NEXT): the verdict is left to whatever comes after them
// (the next tcx program, the clsact filters, the stack), so attaching them never changes traffic.
// No kernel structs are read beyond the skb context, so no CO-RE relocation and no vmlinux.h.
#include "packet_protocol.h"
#include <linux/pkt_cls.h>

// One counter per (direction, protocol): key = direction * P_COUNT + slot, direction 0 ingress, 1 egress
// (hypermesh/ebpf/programs/tc.py reads them all with one batched lookup). A key computed at run time
// needs no pointer arithmetic on the map value, so the verifier takes this program from a process with
// CAP_BPF + CAP_NET_ADMIN alone (indexing one value by the slot needs CAP_PERFMON, as in xdp.bpf.c).
struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * P_COUNT);
	__type(key, __u32);
	__type(value, struct counter);
} tc_stats SEC(".maps");

// At both hooks skb->data starts at the Ethernet header (the kernel pushes it back for ingress) and
// skb->len is the whole frame, paged data included, as the interface's byte counters count it.
static __always_inline int count(struct __sk_buff *skb, __u32 direction)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 key = direction * P_COUNT + protocol_slot(data, data_end);

	struct counter *counter = bpf_map_lookup_elem(&tc_stats, &key);
	if (counter) {
		counter->packets += 1;  // per-CPU value: no atomics needed
		counter->bytes += skb->len;
	}
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
