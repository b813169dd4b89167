// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Per-CPU packet and byte counts by protocol. Always returns XDP_PASS: it observes, never drops.
// No kernel structs are read (only packet bytes), so no CO-RE relocation and no vmlinux.h.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Slot order is part of the ABI with hypermesh/ebpf/xdp.py (PROTOCOLS).
enum {
	P_IPV4_TCP, P_IPV4_UDP, P_IPV4_ICMP, P_IPV4_OTHER,
	P_IPV6_TCP, P_IPV6_UDP, P_IPV6_ICMP, P_IPV6_OTHER,
	P_ARP, P_OTHER, P_COUNT
};

// One value holds every counter, so user space reads all of them with one bpf() lookup.
struct xdp_stats {
	__u64 packets[P_COUNT];
	__u64 bytes[P_COUNT];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdp_stats);
} xdp_stats SEC(".maps");

static __always_inline int l4_slot(__u8 proto, int base)
{
	switch (proto) {
	case IPPROTO_TCP: return base;
	case IPPROTO_UDP: return base + 1;
	case IPPROTO_ICMP: case IPPROTO_ICMPV6: return base + 2;
	default: return base + 3;
	}
}

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 key = 0;
	int slot = P_OTHER;

	struct xdp_stats *stats = bpf_map_lookup_elem(&xdp_stats, &key);
	if (!stats)
		return XDP_PASS;
	if ((void *)(eth + 1) <= data_end) {
		__u16 proto = bpf_ntohs(eth->h_proto);
		if (proto == ETH_P_IP) {
			struct iphdr *ip = (void *)(eth + 1);
			slot = (void *)(ip + 1) <= data_end ? l4_slot(ip->protocol, P_IPV4_TCP) : P_IPV4_OTHER;
		} else if (proto == ETH_P_IPV6) {
			struct ipv6hdr *ip6 = (void *)(eth + 1);
			// Extension headers are counted as "other": walking them is not worth the verifier cost.
			slot = (void *)(ip6 + 1) <= data_end ? l4_slot(ip6->nexthdr, P_IPV6_TCP) : P_IPV6_OTHER;
		} else if (proto == ETH_P_ARP) {
			slot = P_ARP;
		}
	}
	if (slot >= 0 && slot < P_COUNT) {
		stats->packets[slot] += 1;  // per-CPU value: no atomics needed
		stats->bytes[slot] += data_end - data;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
