// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
/*
 * Health-check forwarding (Katran's "healthchecking" program, katran#132):
 * on the balancer interface's tc egress, a packet whose skb->mark is a key of
 * hc_reals gets the outer header a client's packet to a VIP would get from
 * balancer.c - IPIP, IP6IP6 or 4in6 towards the real - and leaves through the
 * same interface. The agent's check sockets set that mark (SO_MARK), connect
 * to the VIP itself and let the kernel's TCP/UDP stack do the rest; the
 * backend answers the VIP's client (the balancer) directly, as it answers any
 * client. A check therefore fails exactly when the backend would drop traffic:
 * decap missing, rp_filter, VIP not bound, service not listening.
 *
 * The Ethernet header is kept: the kernel routed the inner packet to the VIP,
 * whose next hop is the gateway balancer.c sends every real's traffic to.
 * Unmarked packets (everything but checks) pass untouched after one load of
 * skb->mark. Loads on Linux 6.1 (Debian 12) and later.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HC_MAX_REALS);
	__type(key, __u32);
	__type(value, struct hc_real);
} hc_reals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HC_STAT_MAX);
	__type(key, __u32);
	__type(value, struct lb_stats);
} hc_stats SEC(".maps");

#define HC_TTL 64

static __always_inline void count(__u32 slot, __u32 bytes)
{
	struct lb_stats *s = bpf_map_lookup_elem(&hc_stats, &slot);

	if (s) {
		s->packets++;
		s->bytes += bytes;
	}
}

static __always_inline __u16 ip_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static __always_inline int wrap4(struct __sk_buff *skb, const struct hc_real *r)
{
	struct iphdr ip = {};
	__u32 inner_len = skb->len - ETH_HLEN;

	if (bpf_skb_adjust_room(skb, sizeof(ip), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
		return -1;
	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(inner_len + sizeof(ip));
	ip.frag_off = bpf_htons(0x4000); /* DF, as balancer.c sets it */
	ip.ttl = HC_TTL;
	ip.protocol = IPPROTO_IPIP;
	ip.saddr = r->src[0];
	ip.daddr = r->dst[0];
	ip.check = ip_csum(&ip);
	return bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0);
}

static __always_inline int wrap6(struct __sk_buff *skb, const struct hc_real *r, __u8 inner_proto)
{
	struct ipv6hdr ip6 = {};
	__be16 proto = bpf_htons(ETH_P_IPV6);
	__u32 inner_len = skb->len - ETH_HLEN;

	if (bpf_skb_adjust_room(skb, sizeof(ip6), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
		return -1;
	ip6.version = 6;
	ip6.payload_len = bpf_htons(inner_len);
	ip6.nexthdr = inner_proto;
	ip6.hop_limit = HC_TTL;
	__builtin_memcpy(&ip6.saddr, r->src, 16);
	__builtin_memcpy(&ip6.daddr, r->dst, 16);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0))
		return -1;
	/* 4in6: the frame's ethertype follows the outer header. */
	return bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto), 0);
}

SEC("tc")
int hc_encap(struct __sk_buff *skb)
{
	__u32 mark = skb->mark;
	struct hc_real *r;
	__u8 inner_proto;
	__u32 len = skb->len;
	int err;

	if (!mark)
		return TC_ACT_OK;
	r = bpf_map_lookup_elem(&hc_reals, &mark);
	if (!r)
		return TC_ACT_OK;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		inner_proto = IPPROTO_IPIP;
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		inner_proto = IPPROTO_IPV6;
	else
		return TC_ACT_OK; /* ARP and the like: not a check's packet */
	if (r->family == LB_FAMILY_V4) {
		/* IPv6 in IPv4 is what balancer.c never sends either. */
		err = inner_proto == IPPROTO_IPIP ? wrap4(skb, r) : -1;
		if (!err) {
			count(HC_STAT_ENCAP_V4, len);
			return TC_ACT_OK;
		}
	} else if (r->family == LB_FAMILY_V6) {
		if (!wrap6(skb, r, inner_proto)) {
			count(HC_STAT_ENCAP_V6, len);
			return TC_ACT_OK;
		}
	}
	count(HC_STAT_ERROR, len);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
