// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
/*
 * Backend decapsulation: strip the balancer's IPIP / IP6IP6 / 4in6 header
 * from packets addressed to this host and hand the inner packet to the
 * stack, so a backend needs neither the ipip/ip6_tunnel modules nor a
 * tunnel device (and so none of the rp_filter traps of one; DESIGN.md).
 *
 * Two attach points, same parser, same maps (lb_abi.h, decap section):
 *   decap_xdp  XDP, any mode. Runs before GRO and before the kernel looks at
 *              VLAN tags, so it sees every frame as it came off the wire.
 *   decap_tc   tc ingress (clsact, direct action), for NICs/setups where
 *              XDP is unwanted. Runs after GRO and after the kernel moved
 *              the 802.1Q tag into skb metadata.
 * Both always let the packet continue (XDP_PASS / TC_ACT_OK): this program
 * only ever removes a header, it never filters. The one exception is
 * documented at tc_strip_4in6().
 *
 * Loads on Linux 6.1 (Debian 12) and later: only helpers from <= 5.x are
 * called; the 6.3+ adjust_room decap flag is tried at run time and a 6.1
 * fallback takes over when the kernel rejects it.
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

/* Not in 6.1's UAPI header; the value is fixed ABI since 6.3. */
#define DECAP_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define DECAP_EINVAL 22
/* Kernel-internal in <net/ip.h>, not UAPI. */
#define DECAP_IP_MF 0x2000
#define DECAP_IP_OFFSET 0x1fff

/* Enough linear bytes for the deepest header we read: Ethernet, one VLAN
 * tag, outer IPv6, the inner IPv6 fixed header. */
#define DECAP_PARSE_LEN (ETH_HLEN + 4 + 40 + 40)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DECAP_MAX_LOCALS);
	__type(key, struct decap_local_key);
	__type(value, struct decap_local_meta);
	/* Pinned so that a reload (upgrade, restart of the agent) keeps the
	 * addresses and the counters instead of decapsulating nothing until
	 * the control plane refills the map. */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} decap_locals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_STAT_MAX);
	__type(key, __u32);
	__type(value, struct decap_stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} decap_stats SEC(".maps");

struct decap_plan {
	__u32 l2_len;      /* ETH_HLEN, or + 4 with an in-packet 802.1Q tag */
	__u32 outer_len;   /* bytes to remove after L2: 20 or 40 */
	__be16 inner_eth;  /* ethertype of the inner packet */
	__u8 outer_v6;
	__u8 vlan;
};

struct vlan_tag {
	__be16 tci;
	__be16 eth_proto;
};

static __always_inline void count(__u32 idx, __u64 bytes)
{
	struct decap_stat *st = bpf_map_lookup_elem(&decap_stats, &idx);

	/* Per-CPU slot: no other writer, plain increments are exact. */
	if (st) {
		st->packets++;
		st->bytes += bytes;
	}
}

static __always_inline int is_local(const struct decap_local_key *key)
{
	return bpf_map_lookup_elem(&decap_locals, key) != NULL;
}

/* The inner header must be present and of the family the outer header
 * announced: the stack would drop a mismatch anyway, but only after we had
 * rewritten the frame, and the counters would lie. */
static __always_inline int inner_ok(void *inner, void *data_end, __u32 version, __u32 min_len)
{
	if (inner + min_len > data_end)
		return 0;
	return (*(__u8 *)inner >> 4) == version;
}

static __always_inline __u32 parse_v4(void *l3, void *data_end, __u64 l3_len,
				      struct decap_plan *plan)
{
	struct iphdr *ip = l3;
	struct decap_local_key key = {};
	__u32 tot_len;

	if ((void *)(ip + 1) > data_end)
		return DECAP_STAT_MALFORMED;
	if ((*(__u8 *)ip >> 4) != 4 || (*(__u8 *)ip & 0xf) < 5)
		return DECAP_STAT_MALFORMED;
	/* Protocol 41 over IPv4 (6in4/sit) is not something our balancer
	 * sends: leave it to the kernel. */
	if (ip->protocol != IPPROTO_IPIP)
		return DECAP_STAT_PASS;

	key.addr[0] = ip->daddr;
	key.family = LB_FAMILY_V4;
	if (!is_local(&key))
		return DECAP_STAT_NOT_FOR_US;

	/* The balancer never sends either; reassembling or skipping options
	 * here would buy nothing but risk. The kernel drops them (no ipip
	 * module) or handles them (with one). */
	if ((*(__u8 *)ip & 0xf) != 5)
		return DECAP_STAT_UNSUPPORTED;
	if (ip->frag_off & bpf_htons(DECAP_IP_MF | DECAP_IP_OFFSET))
		return DECAP_STAT_UNSUPPORTED;

	/* A cut-short packet would become a cut-short inner packet that
	 * looks fine up to its own length check; refuse it here, whole. */
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len < sizeof(struct iphdr) * 2 || tot_len > l3_len)
		return DECAP_STAT_MALFORMED;
	if (!inner_ok(ip + 1, data_end, 4, sizeof(struct iphdr)))
		return DECAP_STAT_MALFORMED;

	plan->outer_len = sizeof(struct iphdr);
	plan->inner_eth = bpf_htons(ETH_P_IP);
	plan->outer_v6 = 0;
	return DECAP_STAT_DECAP_V4;
}

static __always_inline __u32 parse_v6(void *l3, void *data_end, __u64 l3_len,
				      struct decap_plan *plan)
{
	struct ipv6hdr *ip6 = l3;
	struct decap_local_key key = {};
	__u32 inner_version, inner_min;
	__u32 plen;

	if ((void *)(ip6 + 1) > data_end)
		return DECAP_STAT_MALFORMED;
	if ((*(__u8 *)ip6 >> 4) != 6)
		return DECAP_STAT_MALFORMED;
	/* Extension headers are not walked: the balancer never adds any, so
	 * a tunnel behind one is not ours. */
	if (ip6->nexthdr == IPPROTO_IPV6) {
		inner_version = 6;
		inner_min = sizeof(struct ipv6hdr);
	} else if (ip6->nexthdr == IPPROTO_IPIP) {
		inner_version = 4;
		inner_min = sizeof(struct iphdr);
	} else {
		return DECAP_STAT_PASS;
	}

	__builtin_memcpy(key.addr, &ip6->daddr, sizeof(key.addr));
	key.family = LB_FAMILY_V6;
	if (!is_local(&key))
		return DECAP_STAT_NOT_FOR_US;

	plen = bpf_ntohs(ip6->payload_len);
	if (plen < inner_min || plen > l3_len - sizeof(struct ipv6hdr))
		return DECAP_STAT_MALFORMED;
	if (!inner_ok(ip6 + 1, data_end, inner_version, inner_min))
		return DECAP_STAT_MALFORMED;

	plan->outer_len = sizeof(struct ipv6hdr);
	plan->inner_eth = bpf_htons(inner_version == 4 ? ETH_P_IP : ETH_P_IPV6);
	plan->outer_v6 = 1;
	return DECAP_STAT_DECAP_V6;
}

/* frame_len is the whole frame (XDP: data_end - data; tc: skb->len, which
 * may exceed the linear part): lengths in headers are checked against it. */
static __always_inline __u32 parse(void *data, void *data_end, __u64 frame_len,
				   struct decap_plan *plan)
{
	struct ethhdr *eth = data;
	__be16 proto;
	__u32 l2 = ETH_HLEN;

	if ((void *)(eth + 1) > data_end)
		return DECAP_STAT_MALFORMED;
	proto = eth->h_proto;
	plan->vlan = 0;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_tag *tag = data + ETH_HLEN;

		if ((void *)(tag + 1) > data_end)
			return DECAP_STAT_MALFORMED;
		proto = tag->eth_proto;
		l2 += sizeof(*tag);
		plan->vlan = 1;
	}
	plan->l2_len = l2;

	if (proto == bpf_htons(ETH_P_IP))
		return parse_v4(data + l2, data_end, frame_len - l2, plan);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_v6(data + l2, data_end, frame_len - l2, plan);
	return DECAP_STAT_PASS;
}

/* ---- XDP ---- */

/* Ethernet (+ tag) as 16-bit words: stack accesses must be aligned. */
struct l2_copy {
	__be16 w[(ETH_HLEN + 4) / 2];
};

static __always_inline int xdp_strip(struct xdp_md *ctx, const struct decap_plan *plan)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct l2_copy l2 = {};

	/* Save the frame's own L2 header, then drop the outer IP header by
	 * moving the start of the frame forward and writing L2 back in front
	 * of the inner packet. Saving first means a refused adjust leaves
	 * the frame exactly as it was. */
	if (plan->vlan) {
		if (data + ETH_HLEN + 4 > data_end)
			return -1;
		__builtin_memcpy(&l2, data, ETH_HLEN + 4);
		l2.w[8] = plan->inner_eth;
	} else {
		if (data + ETH_HLEN > data_end)
			return -1;
		__builtin_memcpy(&l2, data, ETH_HLEN);
		l2.w[6] = plan->inner_eth;
	}

	if (bpf_xdp_adjust_head(ctx, (int)plan->outer_len))
		return -1;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* Cannot fail: parse() saw a full inner IP header (>= 20 bytes)
	 * behind the outer one. The check is for the verifier. */
	if (plan->vlan) {
		if (data + ETH_HLEN + 4 > data_end)
			return -1;
		__builtin_memcpy(data, &l2, ETH_HLEN + 4);
	} else {
		if (data + ETH_HLEN > data_end)
			return -1;
		__builtin_memcpy(data, &l2, ETH_HLEN);
	}
	return 0;
}

SEC("xdp")
int decap_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct decap_plan plan = {};
	__u32 verdict;

	verdict = parse(data, data_end, len, &plan);
	if (verdict == DECAP_STAT_DECAP_V4 || verdict == DECAP_STAT_DECAP_V6) {
		if (xdp_strip(ctx, &plan))
			verdict = DECAP_STAT_ERROR;
	}
	count(verdict, len);
	return XDP_PASS;
}

/* ---- tc ---- */

/* 4in6: besides removing 40 bytes, skb->protocol must become IPv4, or the
 * stack hands the inner IPv4 packet to ipv6_rcv, which drops it. Writing the
 * ethertype alone is not enough: the stack read it before tc ran.
 *
 * 6.3+ does both in one call (BPF_F_ADJ_ROOM_DECAP_L3_IPV4). 6.1 rejects
 * that flag with -EINVAL before touching the packet; there we remove 20
 * bytes with adjust_room and let bpf_skb_change_proto(6 -> 4) remove the
 * other 20 and switch the protocol, as Katran's tc decap does. If that
 * second step failed the frame would be half stripped, so it is dropped.
 * It only fails on allocation failure: the first step already unshared and
 * linearised the headers. On 6.1, change_proto also grows gso_size by 20
 * for GRO-merged packets (it assumes a v6->v4 translation): harmless for
 * local delivery, and one more reason to prefer XDP there (docs/decap.md).
 *
 * Building with -DDECAP_TC_NO_DECAP_FLAG forces the 6.1 path, so tests on
 * newer kernels cover it too. */
static __always_inline int tc_strip_4in6(struct __sk_buff *skb, __u64 flags, int *act)
{
	int ret;

	*act = TC_ACT_OK;
#ifndef DECAP_TC_NO_DECAP_FLAG
	ret = bpf_skb_adjust_room(skb, -(int)sizeof(struct ipv6hdr), BPF_ADJ_ROOM_MAC,
				  flags | DECAP_ADJ_ROOM_DECAP_L3_IPV4);
	if (ret != -DECAP_EINVAL)
		return ret;
#endif
	ret = bpf_skb_adjust_room(skb, -(int)(sizeof(struct ipv6hdr) - sizeof(struct iphdr)),
				  BPF_ADJ_ROOM_MAC, flags);
	if (ret)
		return ret;
	ret = bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0);
	if (ret)
		*act = TC_ACT_SHOT;
	return ret;
}

static __always_inline int tc_strip(struct __sk_buff *skb, const struct decap_plan *plan, int *act)
{
	/* The outer header's size says nothing about the inner segments: a
	 * GRO-merged packet keeps its gso_size (Katran and cilium do the
	 * same; without it the stack may build oversized segments). */
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	__be16 eth_proto = plan->inner_eth;
	int ret;

	*act = TC_ACT_OK;
	if (plan->outer_v6 && plan->inner_eth == bpf_htons(ETH_P_IP)) {
		ret = tc_strip_4in6(skb, flags, act);
		if (ret)
			return ret;
		/* The kernel moves the L2 header forward unchanged, so the
		 * frame would still say 0x86dd. Not used by the stack past
		 * this point, but seen by anything reading the frame (the
		 * next tc filter, a tap on the way up, a redirect). Outside
		 * every checksum, so no csum flags. */
		bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto,
				    sizeof(eth_proto), 0);
		return 0;
	}
	/* Same family: skb->protocol and the ethertype are already right. */
	return bpf_skb_adjust_room(skb, -(int)plan->outer_len, BPF_ADJ_ROOM_MAC, flags);
}

SEC("tc")
int decap_tc(struct __sk_buff *skb)
{
	__u64 len = skb->len;
	__u32 want = len < DECAP_PARSE_LEN ? len : DECAP_PARSE_LEN;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct decap_plan plan = {};
	__u32 verdict;
	int act = TC_ACT_OK;

	/* Headers usually sit in the linear part already; pull only when they
	 * do not (pulling unshares a cloned skb, not free). */
	if (data + want > data_end) {
		if (bpf_skb_pull_data(skb, want)) {
			count(DECAP_STAT_ERROR, len);
			return TC_ACT_OK;
		}
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	verdict = parse(data, data_end, len, &plan);
	if (verdict == DECAP_STAT_DECAP_V4 || verdict == DECAP_STAT_DECAP_V6) {
		/* The stack moves a received 802.1Q tag into skb metadata
		 * before tc ingress, where it stays untouched by us; a tag
		 * still in the packet here is a second (stacked) one, or a
		 * synthetic frame. adjust_room cannot work behind it
		 * (skb->protocol is 802.1Q), so leave it to the kernel. */
		if (plan.vlan)
			verdict = DECAP_STAT_UNSUPPORTED;
		else if (tc_strip(skb, &plan, &act))
			verdict = DECAP_STAT_ERROR;
	}
	count(verdict, len);
	return act;
}

char _license[] SEC("license") = "Dual BSD/GPL";
