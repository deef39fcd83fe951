// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
/*
 * XDP L4 balancer: packets to a VIP are encapsulated (IPIP, IP6IP6, 4in6)
 * towards a real chosen by the connection table or the VIP's Maglev ring,
 * and sent back out with XDP_TX. Everything else is passed untouched.
 *
 * Cost is dominated by kernel calls (a hash-map lookup is a call, ~70 ns on
 * the VMs we measured; array lookups are inlined), so the common case makes
 * as few as possible: an array bitmap (lb_addr_filter) rejects non-VIP
 * destinations, a well-formed TCP/UDP packet finds its VIP in an array
 * (lb_vip_table), and only unusual packets to a VIP address (ICMP, IPv4
 * options, fragments, bad lengths) consult the lb_vip_addrs hash, and the
 * connection table is a set-associative cache in an array (lb_abi.h). The
 * one kernel call left on the forwarding path is bpf_xdp_adjust_head.
 *
 * Verdicts (each counted in lb_global):
 *  - not Ethernet+[one 802.1Q tag]+IPv4/IPv6, IP header incomplete, wrong
 *    IP version, destination not a VIP address                  -> PASS
 *  - to a VIP address: IPv4 with options (ihl > 5)              -> DROP
 *                      IPv4 fragment / IPv6 fragment header     -> DROP
 *                      ihl < 5, length field beyond the frame or shorter
 *                      than the headers, L4 header truncated    -> DROP (malformed)
 *                      ICMP echo request                        -> TX (answered)
 *                      ICMP frag-needed / packet-too-big about a VIP flow
 *                        -> TX to that flow's real
 *                      other protocols, other ICMP, IPv6 extension headers,
 *                      (addr, port, proto) not a VIP            -> PASS
 *  - VIP packet (or ICMP to a VIP address) with L3 length above
 *    lb_config.max_pkt_size                                     -> DROP
 *  - VIP without ring / empty slot / free real / IPv6 VIP on an IPv4 real
 *                                                               -> DROP (no_real)
 *  - headroom for the outer header unavailable                  -> DROP (encap)
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_abi.h"

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define NEXTHDR_FRAGMENT 44
#define REPLY_TTL 64
#define LB_HASH_SEED LB_RING_SIZE

/* linux/icmp.h drags in glibc's socket headers, which do not build for
 * the bpf target: the few ICMPv4 bits needed are spelled out here. */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_ECHO 8

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* ------------------------------------------------------------------ maps */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, struct lb_addr);
	__type(value, struct lb_addr_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_vip_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_ADDR_FILTER_BITS / 64);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_addr_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_VIP_TABLE_SIZE);
	__type(key, __u32);
	__type(value, struct lb_vip_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_vip_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_REALS);
	__type(key, __u32);
	__type(value, struct lb_real);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_reals SEC(".maps");

struct lb_ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
	__uint(map_flags, LB_RING_INNER_FLAGS);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct lb_ring); /* must be last: flexible array */
} lb_rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_CONN_SETS);
	__type(key, __u32);
	__type(value, struct lb_conn_set4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_conns4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_CONN_SETS);
	__type(key, __u32);
	__type(value, struct lb_conn_set6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lb_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_REALS);
	__type(key, __u32);
	__type(value, struct lb_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_real_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lb_vip_pairs);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_vip_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_PAIRS);
	__type(key, __u32);
	__type(value, struct lb_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_pair_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_global_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_global SEC(".maps");

/* ------------------------------------------------------------------ hash */
/* Bob Jenkins' lookup3 mixing (public domain), the function Katran and the
 * kernel's jhash use: fast on 32-bit words and good enough for Maglev. */
static __always_inline __u32 rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

#define JHASH_INITVAL 0xdeadbeef

#define jhash_mix(a, b, c)                     \
	do {                                   \
		a -= c; a ^= rol32(c, 4); c += b;  \
		b -= a; b ^= rol32(a, 6); a += c;  \
		c -= b; c ^= rol32(b, 8); b += a;  \
		a -= c; a ^= rol32(c, 16); c += b; \
		b -= a; b ^= rol32(a, 19); a += c; \
		c -= b; c ^= rol32(b, 4); b += a;  \
	} while (0)

#define jhash_final(a, b, c)                     \
	do {                                     \
		c ^= b; c -= rol32(b, 14);       \
		a ^= c; a -= rol32(c, 11);       \
		b ^= a; b -= rol32(a, 25);       \
		c ^= b; c -= rol32(b, 16);       \
		a ^= c; a -= rol32(c, 4);        \
		b ^= a; b -= rol32(a, 14);       \
		c ^= b; c -= rol32(b, 24);       \
	} while (0)

static __always_inline __u32 jhash_2words(__u32 a, __u32 b, __u32 initval)
{
	__u32 c = initval + JHASH_INITVAL + (2 << 2);

	a += c;
	b += c;
	jhash_final(a, b, c);
	return c;
}

static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += JHASH_INITVAL + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	jhash_final(a, b, c);
	return c;
}

/* jhash2() over the four words of an IPv6 address. */
static __always_inline __u32 jhash_4words(const __u32 *k, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (4 << 2) + initval;
	a += k[0];
	b += k[1];
	c += k[2];
	jhash_mix(a, b, c);
	a += k[3];
	jhash_final(a, b, c);
	return c;
}

/* --------------------------------------------------------------- checksums */
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* HC' = HC + m + ~m' in one's complement (RFC 1624, eqn. 2 rearranged).
 * Eqn. 3 would give 0x0000 for an all-zero message (id 0, seq 0, no data),
 * which receivers reject; this form always yields a valid checksum. Byte
 * order does not matter as long as old and new words share one. */
static __always_inline void csum_replace2(__sum16 *sum, __u16 old, __u16 new)
{
	__u32 s = (__u32)*sum + old + (__u16)~new;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	*sum = s;
}

static __always_inline void ipv4_set_csum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 s = 0;

	ip->check = 0;
#pragma unroll
	for (int i = 0; i < (int)sizeof(*ip) / 2; i++)
		s += w[i];
	ip->check = csum_fold(s);
}

/* ----------------------------------------------------------------- parsing */
/* What the forwarding path needs to know about a packet: the client->VIP
 * flow (for an ICMP error, the flow the error is about) and the fields the
 * outer header copies. */
struct pkt {
	struct lb_flow flow;
	__u32 l3_len; /* bytes from the (received) IP header to its end */
	__u8 tos;
	__u8 ttl;
	__u8 df;
	__u8 syn;
	__u8 icmp_err;
};

struct ctx {
	struct xdp_md *xdp;
	struct lb_global_stats *gs;
	__u32 l2_len; /* 14, or 18 with a VLAN tag; offsets use l2_len & 0x1f,
		       * a bound the verifier keeps through the stack */
	__u8 vlan;
};

#define FORWARD (-1) /* parser verdict: hand the packet to forward() */
#define PASS(c) ({ (c)->gs->pass++; XDP_PASS; })
#define DROP(c, why) ({ (c)->gs->drop++; (c)->gs->why++; XDP_DROP; })

/* Ports of a TCP/UDP header at l4; -1 when the header is cut off by the
 * frame (end) or by the IP length field (room = IP bytes left at l4). */
static __always_inline int read_ports(void *l4, void *end, __u32 room, __u8 proto, struct pkt *p,
				      int reverse)
{
	struct udphdr *uh = l4; /* ports sit at the same offsets in TCP */

	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end || room < sizeof(*th))
			return -1;
		p->syn = th->syn;
	} else if ((void *)(uh + 1) > end || room < sizeof(*uh)) {
		return -1;
	}
	p->flow.sport = reverse ? uh->dest : uh->source;
	p->flow.dport = reverse ? uh->source : uh->dest;
	return 0;
}

/* Could daddr (four words, IPv4 = one word and zeros) be a VIP address?
 * An inlined array read: no hash lookup for traffic that is not ours. */
static __always_inline int addr_filter(__u32 w)
{
	__u32 h = (w * LB_ADDR_FILTER_MULT) >> (32 - LB_ADDR_FILTER_SHIFT);
	__u32 word = h / 64;
	__u64 *bits = bpf_map_lookup_elem(&lb_addr_filter, &word);

	return bits && ((*bits >> (h % 64)) & 1);
}

/* Does the IP packet, by its own length field, end inside the frame?
 * Kernel 6.1's verifier forgets all bounds after a byte swap (ntohs), so
 * the length gets an explicit mask — hidden from clang, which would drop it
 * as a no-op for a 17-bit value. */
static __always_inline int l3_fits(void *l3, __u32 len, void *end)
{
	barrier_var(len);
	len &= 0x1ffff;
	return l3 + len <= end;
}

static __always_inline int too_big(const struct lb_config *cfg, const struct pkt *p)
{
	return cfg->max_pkt_size && p->l3_len > cfg->max_pkt_size;
}

/* The VIP for key, copied out of its slot (see lb_vip_table in lb_abi.h):
 * validated and used from one read, so a concurrent slot write can make
 * the lookup miss but never hand out a mix of two entries. */
static __always_inline int vip_lookup(const struct lb_vip_key *key, struct lb_vip_meta *out)
{
	const __u32 *k = (const __u32 *)key;
	__u32 h = ((k[0] ^ k[1] ^ k[2] ^ k[3] ^ k[4]) * LB_ADDR_FILTER_MULT) >> (32 - LB_VIP_TABLE_SHIFT);

#pragma unroll
	for (int i = 0; i < LB_VIP_PROBES; i++) {
		__u32 slot = (h + i) & (LB_VIP_TABLE_SIZE - 1);
		__u32 *w = bpf_map_lookup_elem(&lb_vip_table, &slot);
		__u32 w5, w6;

		if (!w)
			return 0;
		if (w[0] != k[0] || w[1] != k[1] || w[2] != k[2] || w[3] != k[3] || w[4] != k[4])
			continue;
		w5 = w[5];
		w6 = w[6];
		if (w[7] != (LB_VIP_ENTRY_MAGIC ^ k[0] ^ k[1] ^ k[2] ^ k[3] ^ k[4] ^ w5 ^ w6))
			continue;
		out->vip_num = w5;
		out->flags = w6;
		return 1;
	}
	return 0;
}

/* --------------------------------------------------------------- forward */
/* The connection table (lb_abi.h). One scan of the flow's set finds its
 * entry (*out, returns 1) or, on a miss, the entry a new flow replaces
 * (*out, returns 0): its own stale 5-tuple first, then an empty entry,
 * then the least recently used. The check is recomputed from the same read
 * of real_idx that is returned, so a racing writer yields a miss.
 * Entry words: the key (n words), then real_idx, atime, check, pad. */
#define CONN_REAL(n) (n)
#define CONN_ATIME(n) ((n) + 1)
#define CONN_CHECK(n) ((n) + 2)
#define CONN_KEY4 (sizeof(struct lb_flow4) / 4)
#define CONN_KEY6 (sizeof(struct lb_flow) / 4)
_Static_assert(__builtin_offsetof(struct lb_conn4, real_idx) == 4 * CONN_REAL(CONN_KEY4) &&
	       __builtin_offsetof(struct lb_conn4, atime) == 4 * CONN_ATIME(CONN_KEY4) &&
	       __builtin_offsetof(struct lb_conn4, check) == 4 * CONN_CHECK(CONN_KEY4) &&
	       __builtin_offsetof(struct lb_conn6, real_idx) == 4 * CONN_REAL(CONN_KEY6) &&
	       __builtin_offsetof(struct lb_conn6, atime) == 4 * CONN_ATIME(CONN_KEY6) &&
	       __builtin_offsetof(struct lb_conn6, check) == 4 * CONN_CHECK(CONN_KEY6),
	       "conn entry layout: key words, then real_idx, atime, check");

/* The IPv4 connection-table key of a flow (padding zeroed: it is hashed). */
static __always_inline void flow4(const struct pkt *p, struct lb_flow4 *k)
{
	k->src = p->flow.src[0];
	k->dst = p->flow.dst[0];
	k->sport = p->flow.sport;
	k->dport = p->flow.dport;
	k->proto = p->flow.proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

static __always_inline __u32 key_xor(const __u32 *k, __u32 n)
{
	__u32 x = k[0] ^ k[1] ^ k[2] ^ k[3];

	if (n == CONN_KEY6)
		x ^= k[4] ^ k[5] ^ k[6] ^ k[7] ^ k[8] ^ k[9];
	return x;
}

static __always_inline int key_eq(const __u32 *e, const __u32 *k, __u32 n)
{
	if (e[0] != k[0] || e[1] != k[1] || e[2] != k[2] || e[3] != k[3])
		return 0;
	if (n == CONN_KEY6)
		return e[4] == k[4] && e[5] == k[5] && e[6] == k[6] && e[7] == k[7] && e[8] == k[8] &&
		       e[9] == k[9];
	return 1;
}

/* Scan one set: n key words, entries of esz words. *evict: the entry a
 * miss returns holds another flow (not empty, not this flow's own). */
static __always_inline int conn_scan(__u32 *set, const __u32 *k, __u32 n, __u32 esz, __u32 kx, __u32 now,
				     __u32 **out, __u32 *evict)
{
	__u32 oldest = 0;
	__u32 *victim = set;

#pragma unroll
	for (int i = 0; i < LB_CONN_WAYS; i++) {
		__u32 *e = set + i * esz;
		__u32 real = e[CONN_REAL(n)], check = e[CONN_CHECK(n)], age;

		if (key_eq(e, k, n)) {
			*out = e;
			return check == (LB_CONN_MAGIC ^ kx ^ real);
		}
		age = check ? now - e[CONN_ATIME(n)] : 0xffffffffU;
		if (age > oldest) {
			oldest = age;
			victim = e;
		}
	}
	*out = victim;
	*evict = victim[CONN_CHECK(n)] != 0;
	return 0;
}

/* The flow's real index from the table (0: not recorded); *slot gets the
 * entry a recording should write. */
static __always_inline __u32 conn_lookup(const struct pkt *p, __u32 now, __u32 **slot, __u32 *kx,
					 __u32 *evict)
{
	const __u32 *k = (const __u32 *)&p->flow;
	__u32 set_idx, *set;

	if (p->flow.family == LB_FAMILY_V6) {
		*kx = key_xor(k, CONN_KEY6);
		set_idx = jhash_3words(k[0] ^ k[1] ^ k[2] ^ k[3], k[4] ^ k[5] ^ k[6] ^ k[7], k[8] ^ k[9],
				       LB_CONN_HASH_SEED) & (LB_CONN_SETS - 1);
		set = bpf_map_lookup_elem(&lb_conns, &set_idx);
		if (!set)
			return 0;
		if (!conn_scan(set, k, CONN_KEY6, sizeof(struct lb_conn6) / 4, *kx, now, slot, evict))
			return 0;
		return (*slot)[CONN_REAL(CONN_KEY6)];
	} else {
		struct lb_flow4 f;
		const __u32 *k4 = (const __u32 *)&f;

		flow4(p, &f);

		*kx = key_xor(k4, CONN_KEY4);
		set_idx = jhash_3words(k4[0], k4[1], k4[2] ^ k4[3], LB_CONN_HASH_SEED) & (LB_CONN_SETS - 1);
		set = bpf_map_lookup_elem(&lb_conns4, &set_idx);
		if (!set)
			return 0;
		if (!conn_scan(set, k4, CONN_KEY4, sizeof(struct lb_conn4) / 4, *kx, now, slot, evict))
			return 0;
		return (*slot)[CONN_REAL(CONN_KEY4)];
	}
}

/* A recorded flow's packet: refresh atime, writing only when it changed
 * (once per jiffy at most), so busy flows do not dirty the line per packet. */
static __always_inline void conn_touch(const struct pkt *p, __u32 *e, __u32 now)
{
	__u32 *atime = e + (p->flow.family == LB_FAMILY_V6 ? CONN_ATIME(CONN_KEY6) : CONN_ATIME(CONN_KEY4));

	if (*atime != now)
		*atime = now;
}

/* Record the flow in the entry conn_lookup chose. */
static __always_inline void conn_record(const struct pkt *p, __u32 *e, __u32 kx, __u32 real_idx, __u32 now)
{
	if (p->flow.family == LB_FAMILY_V6) {
		struct lb_conn6 *c = (struct lb_conn6 *)e;

		__builtin_memcpy(&c->flow, &p->flow, sizeof(c->flow));
		c->real_idx = real_idx;
		c->atime = now;
		c->check = LB_CONN_MAGIC ^ kx ^ real_idx;
	} else {
		struct lb_conn4 *c = (struct lb_conn4 *)e;

		flow4(p, &c->flow);
		c->real_idx = real_idx;
		c->atime = now;
		c->check = LB_CONN_MAGIC ^ kx ^ real_idx;
	}
}

static __always_inline void per_flow_src(const struct pkt *p, __u8 out_family, __be32 *out)
{
	/* Last 4 bytes of the client address (the whole address for IPv4)
	 * mixed with its port: flows spread over the backends' RX queues. */
	__be32 cw = p->flow.family == LB_FAMILY_V4 ? p->flow.src[0] : p->flow.src[3];
	__u8 *c = (__u8 *)&cw;
	const __u8 *port = (const __u8 *)&p->flow.sport;

	if (out_family == LB_FAMILY_V4) {
		__u8 *o = (__u8 *)out;

		o[0] = 172;
		o[1] = 16;
		o[2] = c[2] ^ port[0];
		o[3] = c[3] ^ port[1];
	} else {
		__u8 *o = (__u8 *)out;

		out[0] = bpf_htonl(0x01000000);
		out[1] = 0;
		out[2] = 0;
		o[12] = c[0] ^ port[0];
		o[13] = c[1] ^ port[1];
		o[14] = c[2];
		o[15] = c[3];
	}
}

static __always_inline __u32 flow_hash(const struct pkt *p, __u32 vip_flags)
{
	__be16 sport = p->flow.sport;
	__u32 src = 0, ports;

	if (vip_flags & LB_VIP_F_DPORT_HASH) {
		/* As Katran: source address ignored, source port := dest port. */
		sport = p->flow.dport;
	} else {
		if (vip_flags & LB_VIP_F_NO_SPORT)
			sport = 0;
		src = p->flow.family == LB_FAMILY_V4 ? p->flow.src[0]
						     : jhash_4words(p->flow.src, LB_HASH_SEED);
	}
	ports = ((__u32)sport << 16) | p->flow.dport;
	return jhash_2words(src, ports, LB_HASH_SEED);
}

static __always_inline struct lb_real *ring_real(const struct pkt *p, const struct lb_vip_meta *vip,
						  __u32 *real_idx)
{
	__u32 vip_num = vip->vip_num, slot;
	__u32 *idx;
	void *ring;

	ring = bpf_map_lookup_elem(&lb_rings, &vip_num);
	if (!ring)
		return NULL;
	slot = flow_hash(p, vip->flags) % LB_RING_SIZE;
	idx = bpf_map_lookup_elem(ring, &slot);
	if (!idx || !*idx)
		return NULL;
	*real_idx = *idx;
	return bpf_map_lookup_elem(&lb_reals, idx);
}

static __always_inline int encap(struct ctx *c, const struct pkt *p, const struct lb_real *real,
				 const struct lb_config *cfg)
{
	__u16 ethertype = real->family == LB_FAMILY_V4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	__u8 inner_proto = p->flow.family == LB_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	int outer_len = real->family == LB_FAMILY_V4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	__u32 l2_len = c->l2_len;
	void *data, *end;
	struct ethhdr *eth;
	__u16 tci = 0;

	/* The VLAN TCI must be read before the head moves: the old L2 header
	 * is overwritten by the outer IP header afterwards. */
	if (c->vlan) {
		data = (void *)(long)c->xdp->data;
		end = (void *)(long)c->xdp->data_end;
		if (data + sizeof(struct ethhdr) + sizeof(struct vlan_hdr) > end)
			return DROP(c, drop_malformed);
		tci = ((struct vlan_hdr *)(data + sizeof(struct ethhdr)))->tci;
	}
	if (bpf_xdp_adjust_head(c->xdp, -outer_len))
		return DROP(c, drop_encap);
	data = (void *)(long)c->xdp->data;
	end = (void *)(long)c->xdp->data_end;

	eth = data;
	if ((void *)(eth + 1) > end)
		return DROP(c, drop_encap);
	__builtin_memcpy(eth->h_dest, cfg->gw_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->if_mac, ETH_ALEN);
	if (c->vlan) {
		struct vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > end)
			return DROP(c, drop_encap);
		eth->h_proto = bpf_htons(ETH_P_8021Q);
		vh->tci = tci;
		vh->encap_proto = ethertype;
	} else {
		eth->h_proto = ethertype;
	}

	if (real->family == LB_FAMILY_V4) {
		struct iphdr *ip = data + (l2_len & 0x1f);
		__u16 *w = (__u16 *)ip;
		__be32 saddr, daddr = real->addr[0];
		__u16 w0, w1, w3, w4;
		__u32 sum;

		if ((void *)(ip + 1) > end)
			return DROP(c, drop_encap);
		if (cfg->flags & LB_CFG_F_PER_FLOW_SRC)
			per_flow_src(p, LB_FAMILY_V4, &saddr);
		else
			saddr = cfg->src_v4;
		/* Written and summed as 16-bit words from registers: reading the
		 * header back would stall on store forwarding. id is always 0 and
		 * DF follows the inner packet, so an outer fragment is never made
		 * (it could not be reassembled reliably without ids). */
		w0 = bpf_htons(0x4500 | p->tos);
		w1 = bpf_htons(p->l3_len + sizeof(*ip));
		w3 = p->df ? bpf_htons(IP_DF) : 0;
		w4 = bpf_htons(((__u16)p->ttl << 8) | inner_proto);
		w[0] = w0;
		w[1] = w1;
		w[2] = 0;
		w[3] = w3;
		w[4] = w4;
		ip->saddr = saddr;
		ip->daddr = daddr;
		sum = (__u32)w0 + w1 + w3 + w4 + (saddr & 0xffff) + (saddr >> 16) + (daddr & 0xffff) + (daddr >> 16);
		ip->check = csum_fold(sum);
	} else {
		struct ipv6hdr *ip6 = data + (l2_len & 0x1f);

		if ((void *)(ip6 + 1) > end)
			return DROP(c, drop_encap);
		/* version 6, traffic class = inner TOS, flow label 0 */
		*(__be32 *)ip6 = bpf_htonl(0x60000000 | ((__u32)p->tos << 20));
		ip6->payload_len = bpf_htons(p->l3_len);
		ip6->nexthdr = inner_proto;
		ip6->hop_limit = p->ttl;
		if (cfg->flags & LB_CFG_F_PER_FLOW_SRC)
			per_flow_src(p, LB_FAMILY_V6, ip6->saddr.in6_u.u6_addr32);
		else
			__builtin_memcpy(&ip6->saddr, cfg->src_v6, 16);
		__builtin_memcpy(&ip6->daddr, real->addr, 16);
	}
	c->gs->tx++;
	return XDP_TX;
}

static __always_inline int forward(struct ctx *c, struct pkt *p)
{
	struct lb_config *cfg;
	__u32 zero = 0;
	struct lb_vip_key key = {
		.port = p->flow.dport,
		.proto = p->flow.proto,
		.family = p->flow.family,
	};
	struct lb_vip_meta vipm, *vip = &vipm;
	struct lb_real *real = NULL;
	struct lb_stats *st;
	__u32 real_idx = 0, vip_num, now = 0, kx = 0, evict = 0, pair = 0;
	struct lb_vip_pairs *pairs;
	__u32 *slot = NULL;
	int use_conns;

	__builtin_memcpy(key.addr, p->flow.dst, 16);
	if (!vip_lookup(&key, vip)) {
		key.port = 0;
		if (!vip_lookup(&key, vip))
			return PASS(c);
	}
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if (!cfg)
		return PASS(c);
	if (too_big(cfg, p))
		return DROP(c, drop_too_big);

	/* A SYN starts a new connection: it must follow the current ring even
	 * if a stale entry for the same 5-tuple exists. ICMP errors read the
	 * table but never create entries (they are not connections). */
	use_conns = !(vip->flags & LB_VIP_F_NO_CONN_TABLE);
	if (use_conns && !p->syn) {
		now = (__u32)bpf_jiffies64(); /* inlined by the JIT: a load of jiffies */
		real_idx = conn_lookup(p, now, &slot, &kx, &evict);
		if (real_idx) {
			real = bpf_map_lookup_elem(&lb_reals, &real_idx);
			if (real && real->family) {
				c->gs->conn_hit++;
				conn_touch(p, slot, now);
			} else {
				real = NULL;
			}
		}
	}
	if (!real) {
		/* A SYN never uses a recorded real: its set is scanned only to
		 * pick the entry to write, after the ring has decided. */
		real = ring_real(p, vip, &real_idx);
		if (!real || !real->family)
			return DROP(c, drop_no_real);
		if (use_conns && !p->icmp_err) {
			if (p->syn) {
				now = (__u32)bpf_jiffies64();
				conn_lookup(p, now, &slot, &kx, &evict);
			}
			if (slot) {
				conn_record(p, slot, kx, real_idx, now);
				c->gs->conn_miss++;
				c->gs->conn_evict += evict;
			}
		}
	}
	/* 6in4 is not a tunnel backends can be expected to terminate. */
	if (p->flow.family == LB_FAMILY_V6 && real->family != LB_FAMILY_V6)
		return DROP(c, drop_no_real);

	vip_num = vip->vip_num;
	st = bpf_map_lookup_elem(&lb_vip_stats, &vip_num);
	if (st) {
		st->packets++;
		st->bytes += p->l3_len;
	}
	st = bpf_map_lookup_elem(&lb_real_stats, &real_idx);
	if (st) {
		st->packets++;
		st->bytes += p->l3_len;
	}
	/* The (VIP, real) pair's counter; no row or no id: pair 0 (lb_abi.h). */
	pairs = bpf_map_lookup_elem(&lb_vip_pairs, &vip_num);
	if (pairs)
		pair = pairs->pair[real_idx & (LB_MAX_REALS - 1)];
	st = bpf_map_lookup_elem(&lb_pair_stats, &pair);
	if (st) {
		st->packets++;
		st->bytes += p->l3_len;
	}
	if (p->icmp_err)
		c->gs->icmp_too_big++;
	return encap(c, p, real, cfg);
}

/* ------------------------------------------------------------------ IPv4 */
static __always_inline int echo_reply_v4(struct ctx *c, struct ethhdr *eth, struct iphdr *ip,
					 struct icmphdr *ic)
{
	__u8 mac[ETH_ALEN];
	__be32 a = ip->saddr;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	ip->saddr = ip->daddr;
	ip->daddr = a;
	ip->ttl = REPLY_TTL;
	ipv4_set_csum(ip);
	/* type/code word: 8/0 -> 0/0; the rest of the message is echoed as is */
	ic->type = ICMP_ECHOREPLY;
	csum_replace2(&ic->checksum, bpf_htons(ICMP_ECHO << 8), 0);
	c->gs->icmp_echo++;
	c->gs->tx++;
	return XDP_TX;
}

/* Packets to a VIP address that are not well-formed plain TCP/UDP. */
static __always_inline int slow_v4(struct ctx *c, void *data, void *end, struct iphdr *ip, struct pkt *p)
{
	struct lb_addr a;
	struct lb_addr_meta *am;
	struct lb_config *cfg;
	struct icmphdr *ic;
	struct iphdr *in;
	__u32 zero = 0, room;

	/* Field by field: a braced initializer becomes a .rodata copy. */
	__builtin_memcpy(a.addr, p->flow.dst, 16);
	a.family = LB_FAMILY_V4;
	am = bpf_map_lookup_elem(&lb_vip_addrs, &a);
	if (!am)
		return PASS(c);
	if (ip->ihl != 5)
		return ip->ihl < 5 ? DROP(c, drop_malformed) : DROP(c, drop_ip_options);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return DROP(c, drop_fragment);
	if (p->l3_len < sizeof(*ip) || !l3_fits(ip, p->l3_len, end))
		return DROP(c, drop_malformed);
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP)
		return DROP(c, drop_malformed); /* the fast path found its header cut */
	if (ip->protocol != IPPROTO_ICMP)
		return PASS(c);
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if (!cfg)
		return PASS(c);
	if (too_big(cfg, p))
		return DROP(c, drop_too_big);

	/* Bounds are checked against the frame (the verifier needs data_end)
	 * and against the IP length (room), so trailing padding never counts. */
	room = p->l3_len - sizeof(*ip);
	ic = (void *)(ip + 1);
	if ((void *)(ic + 1) > end || room < sizeof(*ic))
		return DROP(c, drop_malformed);
	if (ic->type == ICMP_ECHO && ic->code == 0) {
		if (am->flags & LB_ADDR_F_NO_ECHO)
			return PASS(c);
		return echo_reply_v4(c, data, ip, ic);
	}
	if (ic->type != ICMP_DEST_UNREACH || ic->code != ICMP_FRAG_NEEDED)
		return PASS(c);
	/* The error quotes a packet the real sent as the VIP (DSR): reversed,
	 * its header is the client's flow, which decides the real. */
	in = (void *)(ic + 1);
	if ((void *)(in + 1) > end || room < sizeof(*ic) + sizeof(*in))
		return DROP(c, drop_malformed);
	if (in->ihl != 5)
		return DROP(c, drop_ip_options);
	if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
		return PASS(c);
	/* An ICMP error quotes only 8 L4 bytes: never the whole TCP header. */
	if (read_ports(in + 1, end, room - sizeof(*ic) - sizeof(*in), IPPROTO_UDP, p, 1))
		return DROP(c, drop_malformed);
	p->flow.proto = in->protocol;
	p->flow.src[0] = in->daddr;
	p->flow.dst[0] = in->saddr;
	p->icmp_err = 1;
	return FORWARD;
}

static __always_inline int parse_v4(struct ctx *c, void *data, void *end, struct pkt *p)
{
	struct iphdr *ip = data + (c->l2_len & 0x1f);

	if ((void *)(ip + 1) > end || ip->version != 4)
		return PASS(c);
	if (!addr_filter(ip->daddr))
		return PASS(c);

	p->l3_len = bpf_ntohs(ip->tot_len);
	p->tos = ip->tos;
	p->ttl = ip->ttl;
	p->df = !!(ip->frag_off & bpf_htons(IP_DF));
	p->flow.family = LB_FAMILY_V4;
	p->flow.proto = ip->protocol;
	p->flow.src[0] = ip->saddr;
	p->flow.dst[0] = ip->daddr;
	/* Fast path, nearly all VIP traffic: no options, not a fragment,
	 * TCP/UDP with its header inside both frame and IP length. */
	if (ip->ihl == 5 && !(ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) &&
	    (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) &&
	    p->l3_len >= sizeof(*ip) && l3_fits(ip, p->l3_len, end) &&
	    !read_ports(ip + 1, end, p->l3_len - sizeof(*ip), ip->protocol, p, 0))
		return FORWARD;
	return slow_v4(c, data, end, ip, p);
}

/* ------------------------------------------------------------------ IPv6 */
static __always_inline int echo_reply_v6(struct ctx *c, struct ethhdr *eth, struct ipv6hdr *ip6,
					 struct icmp6hdr *ic)
{
	__u8 mac[ETH_ALEN];
	struct in6_addr a = ip6->saddr;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	ip6->saddr = ip6->daddr;
	ip6->daddr = a;
	ip6->hop_limit = REPLY_TTL;
	/* Swapping addresses keeps the pseudo-header sum; only the type changes. */
	ic->icmp6_type = ICMPV6_ECHO_REPLY;
	csum_replace2(&ic->icmp6_cksum, bpf_htons(ICMPV6_ECHO_REQUEST << 8), bpf_htons(ICMPV6_ECHO_REPLY << 8));
	c->gs->icmp_echo++;
	c->gs->tx++;
	return XDP_TX;
}

static __always_inline int slow_v6(struct ctx *c, void *data, void *end, struct ipv6hdr *ip6, struct pkt *p)
{
	struct lb_addr a;
	struct lb_addr_meta *am;
	struct lb_config *cfg;
	struct icmp6hdr *ic;
	struct ipv6hdr *in;
	__u32 zero = 0, room;

	__builtin_memcpy(a.addr, p->flow.dst, 16);
	a.family = LB_FAMILY_V6;
	am = bpf_map_lookup_elem(&lb_vip_addrs, &a);
	if (!am)
		return PASS(c);
	if (ip6->nexthdr == NEXTHDR_FRAGMENT)
		return DROP(c, drop_fragment);
	if (!l3_fits(ip6, p->l3_len, end))
		return DROP(c, drop_malformed);
	if (ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_UDP)
		return DROP(c, drop_malformed); /* the fast path found its header cut */
	/* Extension headers are not parsed: not ours to judge. */
	if (ip6->nexthdr != IPPROTO_ICMPV6)
		return PASS(c);
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if (!cfg)
		return PASS(c);
	if (too_big(cfg, p))
		return DROP(c, drop_too_big);

	room = p->l3_len - sizeof(*ip6);
	ic = (void *)(ip6 + 1);
	if ((void *)(ic + 1) > end || room < sizeof(*ic))
		return DROP(c, drop_malformed);
	if (ic->icmp6_type == ICMPV6_ECHO_REQUEST && ic->icmp6_code == 0) {
		if (am->flags & LB_ADDR_F_NO_ECHO)
			return PASS(c);
		return echo_reply_v6(c, data, ip6, ic);
	}
	if (ic->icmp6_type != ICMPV6_PKT_TOOBIG)
		return PASS(c);
	in = (void *)(ic + 1);
	if ((void *)(in + 1) > end || room < sizeof(*ic) + sizeof(*in))
		return DROP(c, drop_malformed);
	if (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP)
		return PASS(c);
	if (read_ports(in + 1, end, room - sizeof(*ic) - sizeof(*in), IPPROTO_UDP, p, 1))
		return DROP(c, drop_malformed);
	p->flow.proto = in->nexthdr;
	__builtin_memcpy(p->flow.src, &in->daddr, 16);
	__builtin_memcpy(p->flow.dst, &in->saddr, 16);
	p->icmp_err = 1;
	return FORWARD;
}

static __always_inline int parse_v6(struct ctx *c, void *data, void *end, struct pkt *p)
{
	struct ipv6hdr *ip6 = data + (c->l2_len & 0x1f);
	__u32 *d;

	if ((void *)(ip6 + 1) > end || ip6->version != 6)
		return PASS(c);
	d = ip6->daddr.in6_u.u6_addr32;
	if (!addr_filter(d[0] ^ d[1] ^ d[2] ^ d[3]))
		return PASS(c);

	p->l3_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	p->ttl = ip6->hop_limit;
	p->flow.family = LB_FAMILY_V6;
	p->flow.proto = ip6->nexthdr;
	__builtin_memcpy(p->flow.src, &ip6->saddr, 16);
	__builtin_memcpy(p->flow.dst, &ip6->daddr, 16);
	if ((ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_UDP) &&
	    l3_fits(ip6, p->l3_len, end) &&
	    !read_ports(ip6 + 1, end, p->l3_len - sizeof(*ip6), ip6->nexthdr, p, 0))
		return FORWARD;
	return slow_v6(c, data, end, ip6, p);
}

/* ------------------------------------------------------------------ entry */
SEC("xdp")
int xdp_balancer(struct xdp_md *xdp)
{
	void *data = (void *)(long)xdp->data;
	void *end = (void *)(long)xdp->data_end;
	struct ethhdr *eth = data;
	struct ctx c = { .xdp = xdp, .l2_len = sizeof(*eth) };
	struct pkt p;
	__u32 zero = 0;
	__be16 proto;
	int ret;

	c.gs = bpf_map_lookup_elem(&lb_global, &zero);
	if (!c.gs)
		return XDP_PASS;
	if ((void *)(eth + 1) > end)
		return PASS(&c);
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > end)
			return PASS(&c);
		proto = vh->encap_proto;
		c.l2_len += sizeof(*vh);
		c.vlan = 1;
	}
	__builtin_memset(&p, 0, sizeof(p)); /* flow padding is part of the conn key */
	if (proto == bpf_htons(ETH_P_IP))
		ret = parse_v4(&c, data, end, &p);
	else if (proto == bpf_htons(ETH_P_IPV6))
		ret = parse_v6(&c, data, end, &p);
	else
		return PASS(&c);
	/* One forwarding path for every parser: the program stays small. */
	if (ret != FORWARD)
		return ret;
	return forward(&c, &p);
}

char _license[] SEC("license") = "Dual BSD/GPL";
