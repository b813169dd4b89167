// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// The protocol classification shared by xdp.bpf.c and tc.bpf.c: which counter slot a frame goes to,
// from its Ethernet, IPv4 and IPv6 headers (packet bytes only, no kernel structs: no CO-RE needed).
#ifndef HYPERMESH_PACKET_PROTOCOL_H
#define HYPERMESH_PACKET_PROTOCOL_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Slot order is part of the ABI with hypermesh/ebpf/programs/xdp.py and tc.py (PROTOCOLS).
enum {
	P_IPV4_TCP, P_IPV4_UDP, P_IPV4_ICMP, P_IPV4_OTHER,
	P_IPV6_TCP, P_IPV6_UDP, P_IPV6_ICMP, P_IPV6_OTHER,
	P_ARP, P_OTHER, P_COUNT
};

static __always_inline int l4_slot(__u8 proto, int base)
{
	switch (proto) {
	case IPPROTO_TCP: return base;
	case IPPROTO_UDP: return base + 1;
	case IPPROTO_ICMP: case IPPROTO_ICMPV6: return base + 2;
	default: return base + 3;
	}
}

// data..data_end: the frame from its Ethernet header, as direct packet access gives it (XDP's
// xdp_md, or the linear part of a TC program's skb). Headers beyond it count as "other".
static __always_inline int protocol_slot(void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return P_OTHER;
	__u16 proto = bpf_ntohs(eth->h_proto);
	if (proto == ETH_P_IP) {
		struct iphdr *ip = (void *)(eth + 1);
		return (void *)(ip + 1) <= data_end ? l4_slot(ip->protocol, P_IPV4_TCP) : P_IPV4_OTHER;
	}
	if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		// Extension headers are counted as "other": walking them is not worth the verifier cost.
		return (void *)(ip6 + 1) <= data_end ? l4_slot(ip6->nexthdr, P_IPV6_TCP) : P_IPV6_OTHER;
	}
	if (proto == ETH_P_ARP)
		return P_ARP;
	return P_OTHER;
}

#endif
