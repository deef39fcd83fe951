/* SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0 */
/*
 * The map ABI shared by the BPF programs and the engine
 * (plugins/module_utils/engine/bpf/abi.py mirrors it; tests/unit/test_abi_btf.py
 * checks the mirror against the BTF of the built objects, so change both).
 *
 * Conventions, chosen so that the control plane never has to guess:
 *  - Addresses are always 16 bytes in network order. IPv4 lives in addr[0],
 *    addr[1..3] are zero, and a family field (LB_FAMILY_V4/V6) says which.
 *  - Ports are in network order, as on the wire.
 *  - Explicit padding fields: every struct has the same layout with any
 *    compiler, and keys hash the same bytes the engine wrote.
 *
 * Memory at the defaults (bpftool's memlock figures on 6.18; all preallocated):
 *  - lb_rings inner maps: LB_RING_SIZE * 8 B (array slots are 8-byte
 *    aligned) = 520 KiB per VIP that has a ring, created by the control
 *    plane for configured VIPs only (260 MiB if all 512 VIPs have one; a
 *    ring swap briefly holds two).
 *  - lb_conns4 / lb_conns: 32 / 56 B per entry (arrays, no per-entry
 *    overhead): 2 / 3.5 MiB at 65536 entries each. A new flow's entry is a
 *    random line of the table, so the table's size is paid per new flow in
 *    TLB and cache misses (docs/performance.md, bench/dataplane_bench.py
 *    --conn-table-sizes). Raise it with -DLB_CONN_TABLE_SIZE for more
 *    concurrent flows per balancer.
 *  - lb_reals: 24 B * LB_MAX_REALS = 96 KiB; lb_vip_table: 32 B *
 *    LB_VIP_TABLE_SIZE = 64 KiB; lb_vip_addrs ~50 KiB; lb_addr_filter 2 KiB.
 *  - per-CPU stats: 16 B * (LB_MAX_VIPS + LB_MAX_REALS) = 72 KiB per CPU,
 *    plus lb_pair_stats 16 B * LB_MAX_PAIRS = 1 MiB per CPU.
 *  - lb_vip_pairs: 2 B * LB_MAX_REALS = 8 KiB per VIP slot, 4 MiB in all
 *    (shared, not per CPU). The control plane's ctl_pair_owner adds
 *    8 B * LB_MAX_PAIRS = 512 KiB.
 */
#ifndef LB_ABI_H
#define LB_ABI_H

#include <linux/types.h>

/* ---- build-time sizes (override with -D, see Makefile) ---- */
#ifndef LB_MAX_VIPS
#define LB_MAX_VIPS 512
#endif
#ifndef LB_MAX_REALS
#define LB_MAX_REALS 4096
#endif
/* Ring slots and connection entries hold real indices; the data plane masks
 * them with LB_MAX_REALS - 1 to index lb_vip_pairs without a bounds branch. */
#if (LB_MAX_REALS & (LB_MAX_REALS - 1)) || LB_MAX_REALS < 2
#error "LB_MAX_REALS must be a power of two"
#endif
#ifndef LB_RING_SIZE
#define LB_RING_SIZE 65537 /* must be prime: Maglev needs it */
#endif
#ifndef LB_CONN_TABLE_SIZE
#define LB_CONN_TABLE_SIZE 65536 /* flows per family; see the cost note above */
#endif
#define LB_CONN_WAYS 4 /* entries per set of the connection table */
#define LB_CONN_SETS (LB_CONN_TABLE_SIZE / LB_CONN_WAYS)
#if LB_CONN_SETS < 1 || (LB_CONN_SETS & (LB_CONN_SETS - 1)) || LB_CONN_SETS * LB_CONN_WAYS != LB_CONN_TABLE_SIZE
#error "LB_CONN_TABLE_SIZE must be LB_CONN_WAYS times a power of two"
#endif
#ifndef LB_ADDR_FILTER_SHIFT
#define LB_ADDR_FILTER_SHIFT 14 /* 16384-bit VIP address filter, 2 KiB */
#endif
#define LB_ADDR_FILTER_BITS (1U << LB_ADDR_FILTER_SHIFT)

#define LB_FAMILY_V4 4
#define LB_FAMILY_V6 6

/* ---- lb_addr_filter: ARRAY[LB_ADDR_FILTER_BITS / 64] of __u64 ----
 * Bitmap over VIP addresses, the first test every packet meets: a clear
 * bit passes the packet without any hash lookup. Bit of an address:
 *   w = a[0] ^ a[1] ^ a[2] ^ a[3]   (the address's four 32-bit words,
 *                                    loaded in host byte order)
 *   h = (w * LB_ADDR_FILTER_MULT) mod 2^32 >> (32 - LB_ADDR_FILTER_SHIFT)
 *   word h / 64, bit h % 64.
 * Bits may be set for addresses that are no longer VIPs (only slower);
 * a VIP address whose bit is clear is never balanced. So: set bits before
 * adding a VIP address, clear them after removing one. */
#define LB_ADDR_FILTER_MULT 0x9e3779b1U

/* ---- lb_vip_addrs: HASH, struct lb_addr -> struct lb_addr_meta ----
 * One entry per distinct VIP address. Consulted for packets to a VIP
 * address that are not plain TCP/UDP (ICMP echo is answered here,
 * fragments and bad headers are dropped); absent -> passed. */
struct lb_addr {
	__be32 addr[4];
	__u32 family; /* LB_FAMILY_V4 / LB_FAMILY_V6 */
};

#define LB_ADDR_F_NO_ECHO (1U << 0) /* do not answer ICMP echo: pass it */
struct lb_addr_meta {
	__u32 flags;
};

/* ---- lb_vip_table: ARRAY[LB_VIP_TABLE_SIZE] of struct lb_vip_entry ----
 * The VIPs, as an open-addressed hash table in an array: a hash-map
 * lookup is a kernel call costing ~70 ns on the machines we measured, an
 * array read is a few inlined instructions. Entry for key k lives in one
 * of the LB_VIP_PROBES slots h, h+1, ... (mod size), where
 *   w = k[0] ^ k[1] ^ k[2] ^ k[3] ^ k[4]   (the key's five 32-bit words,
 *                                           loaded in host byte order)
 *   h = (w * LB_ADDR_FILTER_MULT) mod 2^32 >> (32 - LB_VIP_TABLE_SHIFT)
 * A slot is valid when check == LB_VIP_ENTRY_MAGIC ^ (xor of the entry's
 * first seven words); the program reads all probe slots (no early stop),
 * so an entry is removed by zeroing its slot, and a reader that races a
 * slot write sees an invalid slot, never a half-written VIP. To change a
 * VIP, write the new entry to a free slot of its window first, then zero
 * the old one (engine: abi.vip_set / abi.vip_delete).
 * port 0 is the "any port" VIP for that address and protocol; an exact
 * (addr, port, proto) entry wins over it. */
#ifndef LB_VIP_TABLE_SHIFT
#define LB_VIP_TABLE_SHIFT 11 /* 2048 slots (4 per VIP at 512), 64 KiB */
#endif
#define LB_VIP_TABLE_SIZE (1U << LB_VIP_TABLE_SHIFT)
#define LB_VIP_PROBES 4
#define LB_VIP_ENTRY_MAGIC 0x5649504bU

struct lb_vip_key {
	__be32 addr[4];
	__be16 port;
	__u8 proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family; /* LB_FAMILY_V4 / LB_FAMILY_V6 */
};

/* Hash without the client's port: all of a client's flows share a real. */
#define LB_VIP_F_NO_SPORT (1U << 0)
/* Never look up or record in the connection table: the ring alone decides
 * (cheaper; for UDP or stateless services). */
#define LB_VIP_F_NO_CONN_TABLE (1U << 1)
/* Hash on the destination port only: every client of a given port goes to
 * the same real (useful for port-0 VIPs that shard by port). */
#define LB_VIP_F_DPORT_HASH (1U << 2)

struct lb_vip_meta {
	__u32 vip_num; /* index into lb_rings and lb_vip_stats, < LB_MAX_VIPS */
	__u32 flags;   /* LB_VIP_F_* */
};

struct lb_vip_entry {
	struct lb_vip_key key;
	struct lb_vip_meta meta;
	__u32 check;
};

/* ---- lb_reals: ARRAY[LB_MAX_REALS] of struct lb_real ----
 * Ring slots hold real indices. Index 0 is never a real: a zeroed ring slot
 * means "no backend" and the packet is dropped (counted). family 0 marks a
 * free slot: a connection-table entry pointing at it is ignored. */
struct lb_real {
	__be32 addr[4];
	__u32 family; /* 0 = unused, LB_FAMILY_V4 / LB_FAMILY_V6 */
};

/* ---- lb_rings: ARRAY_OF_MAPS[LB_MAX_VIPS], key vip_num ----
 * Each slot holds an inner ARRAY[LB_RING_SIZE] of __u32 real indices (key
 * __u32, flags LB_RING_INNER_FLAGS) — the VIP's Maglev ring. Rings are
 * replaced atomically by creating a new inner map, filling it, and writing
 * its fd into the slot; a packet sees either the old ring or the new one,
 * never a mix. A missing slot drops the VIP's packets (no backend).
 * BPF_F_MMAPABLE lets the control plane fill a ring through mmap (one
 * memcpy instead of 65537 element updates); array elements take 8 bytes
 * each either way, so it costs no memory. */
#define LB_RING_INNER_KEY_SIZE 4
#define LB_RING_INNER_VALUE_SIZE 4
#define LB_RING_INNER_FLAGS 1024 /* BPF_F_MMAPABLE */

/* ---- lb_conns4: ARRAY[LB_CONN_SETS] of struct lb_conn_set4 (IPv4 flows)
 *      lb_conns:  ARRAY[LB_CONN_SETS] of struct lb_conn_set6 (IPv6 flows) ----
 * The connection table: client-to-VIP 5-tuple as seen on the wire -> real.
 * A set-associative cache in an array, not a kernel LRU hash: an array read
 * is inlined, while an LRU_HASH update is a kernel call that costs more
 * than the whole rest of a new flow's path (docs/performance.md). Shared by
 * all CPUs, like a common LRU.
 *
 * A flow lives in one of the LB_CONN_WAYS entries of set
 *   jhash_3words(w0, w1, w2, LB_CONN_HASH_SEED) & (LB_CONN_SETS - 1)
 * (the kernel's jhash_3words; k = the lb_flow4 / lb_flow key's 32-bit
 * words loaded in host byte order):
 *   IPv4: w0 = k[0], w1 = k[1], w2 = k[2] ^ k[3]
 *   IPv6: w0 = k[0] ^ k[1] ^ k[2] ^ k[3], w1 = k[4] ^ .. ^ k[7],
 *         w2 = k[8] ^ k[9]
 * An entry is valid when check == LB_CONN_MAGIC ^ (xor of the key's words)
 * ^ real_idx, so a reader racing a writer on another CPU sees a miss (and
 * takes the ring), never one flow's key with another's real. A packet of a
 * recorded flow refreshes atime (low 32 bits of jiffies); a new flow
 * replaces, in this order, the entry of its own 5-tuple, an empty entry
 * (check 0), or the entry with the oldest atime: least recently used within
 * the set. Entries are never deleted, only replaced, as in an LRU map. */
#define LB_CONN_MAGIC 0x434f4e4eU
#define LB_CONN_HASH_SEED 0x6c62636eU

struct lb_flow {
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct lb_flow4 {
	__be32 src;
	__be32 dst;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct lb_conn4 {
	struct lb_flow4 flow;
	__u32 real_idx;
	__u32 atime; /* jiffies (low 32 bits) of the flow's last packet */
	__u32 check;
	__u32 pad;
};

struct lb_conn6 {
	struct lb_flow flow;
	__u32 real_idx;
	__u32 atime;
	__u32 check;
	__u32 pad;
};

struct lb_conn_set4 {
	struct lb_conn4 way[LB_CONN_WAYS];
};

struct lb_conn_set6 {
	struct lb_conn6 way[LB_CONN_WAYS];
};

/* ---- lb_config: ARRAY[1] of struct lb_config ---- */
/* Outer source per flow instead of src_v4/src_v6, so backends spread flows
 * over RX queues (as Katran does):
 *   IPv4 outer: 172.16.(c[2] ^ p[0]).(c[3] ^ p[1])
 *   IPv6 outer: 0100::/64, bytes 8..11 zero, bytes 12..15 = c[0..3] with
 *               bytes 12,13 xored with p[0],p[1]
 * where c = last 4 bytes of the client address (the whole IPv4 address)
 * and p = the client's source port bytes as on the wire. */
#define LB_CFG_F_PER_FLOW_SRC (1U << 0)

struct lb_config {
	__u8 if_mac[6];      /* source MAC of transmitted frames */
	__u8 gw_mac[6];      /* next hop towards the reals */
	__u32 flags;         /* LB_CFG_F_* */
	__u32 max_pkt_size;  /* L3 bytes (IP header + payload); 0 = no limit */
	__be32 src_v4;       /* outer source for IPv4 outer headers */
	__be32 src_v6[4];    /* outer source for IPv6 outer headers */
};

/* ---- lb_vip_stats: PERCPU_ARRAY[LB_MAX_VIPS] by vip_num,
 *      lb_real_stats: PERCPU_ARRAY[LB_MAX_REALS] by real index ---- */
struct lb_stats {
	__u64 packets;
	__u64 bytes; /* L3 bytes of the inner packet as received */
};

/* ---- lb_vip_pairs: ARRAY[LB_MAX_VIPS] of struct lb_vip_pairs, by vip_num,
 *      lb_pair_stats: PERCPU_ARRAY[LB_MAX_PAIRS] of struct lb_stats ----
 * Per-(VIP, real) counters. Reals are shared between VIPs (one index per
 * real address), so lb_real_stats cannot tell which VIP a real's packets
 * came through. The control plane gives each (VIP, real) of a VIP's record
 * a pair id (drained reals included: they still get connection-table
 * packets) and writes it at pair[real index] of the VIP's row: before the
 * ring that sends traffic to it, cleared only after no ring does. Pair 0 is
 * "unattributed": a packet forwarded for a (VIP, real) without an id (a
 * connection-table hit to a real no longer in that VIP, or a row not yet
 * written after its map was re-created) counts there. The engine keeps the
 * owner of each id in its own map, ctl_pair_owner (engine/balancer). */
#ifndef LB_MAX_PAIRS
#define LB_MAX_PAIRS 65536
#endif
#if LB_MAX_PAIRS > 65536 || LB_MAX_PAIRS < 2
#error "LB_MAX_PAIRS must fit pair ids in 16 bits"
#endif

struct lb_vip_pairs {
	__u16 pair[LB_MAX_REALS]; /* by real index; 0 = no pair id */
};

/* ---- lb_global: PERCPU_ARRAY[1] of struct lb_global_stats ----
 * Every packet the balancer sees lands in exactly one of pass/tx/drop;
 * the drop_* and other counters break those down. */
struct lb_global_stats {
	__u64 pass;            /* XDP_PASS: not for a VIP, or not ours to handle */
	__u64 tx;              /* XDP_TX: encapsulated or answered */
	__u64 drop;            /* XDP_DROP: sum of the drop_* below */
	__u64 conn_hit;        /* forwarded by a connection-table entry */
	__u64 conn_miss;       /* took the ring and was recorded (SYN or new) */
	__u64 icmp_echo;       /* echo requests answered */
	__u64 icmp_too_big;    /* frag-needed / packet-too-big steered to a real */
	__u64 drop_ip_options; /* IPv4 with options to a VIP address */
	__u64 drop_fragment;   /* fragments to a VIP address */
	__u64 drop_too_big;    /* VIP packet above lb_config.max_pkt_size */
	__u64 drop_malformed;  /* truncated/inconsistent headers to a VIP address */
	__u64 drop_no_real;    /* no ring, empty slot or unusable real */
	__u64 drop_encap;      /* headroom unavailable (bpf_xdp_adjust_head) */
	__u64 conn_evict;      /* a new flow replaced a valid entry of another
				* 5-tuple (the set was full): that flow, if
				* still alive, follows the ring from now on.
				* Last: older readers of a shorter value keep
				* their offsets. */
};

/* ---- decap ABI (owned by decap.c) begin ---- */
/*
 * Backend-side decapsulation (decap.c, docs/decap.md). A backend loads only
 * decap.o; nothing here refers to the balancer maps above, but it follows
 * the same conventions (16-byte network-order addresses + LB_FAMILY_*,
 * explicit padding).
 *
 * Memory (defaults, 64-bit kernel, preallocated):
 *  - decap_locals: DECAP_MAX_LOCALS * ~100 B (24 B key+value plus hash
 *    element overhead) = ~25 KiB at 256 addresses.
 *  - decap_stats: 16 B * DECAP_STAT_MAX = 112 B per CPU.
 */
#ifndef DECAP_MAX_LOCALS
#define DECAP_MAX_LOCALS 256
#endif

/* ---- decap_locals: HASH[DECAP_MAX_LOCALS],
 *      struct decap_local_key -> struct decap_local_meta ----
 * The host's own addresses that tunnels may end on. Only a tunnel packet
 * whose outer destination is listed here is stripped: a host must never
 * unwrap a tunnel meant for someone else (a router it forwards for, a
 * container, another tunnel endpoint). Empty map = decapsulate nothing. */
struct decap_local_key {
	__be32 addr[4]; /* IPv4 in addr[0], addr[1..3] zero */
	__u32 family;   /* LB_FAMILY_V4 / LB_FAMILY_V6 */
};

struct decap_local_meta {
	__u32 flags; /* reserved for per-address options: write 0 */
};

/* ---- decap_stats: PERCPU_ARRAY[DECAP_STAT_MAX] of struct decap_stat,
 *      indexed by DECAP_STAT_* ----
 * Every packet either program sees lands in exactly one slot, so the slots
 * sum to the traffic seen. bytes = frame length as received (L2 included).
 * Everything but DECAP_V4/DECAP_V6 leaves the packet byte-identical, except
 * the one DECAP_STAT_ERROR case documented in docs/decap.md (tc, 4in6 on a
 * pre-6.3 kernel, second resize step refused: dropped). */
#define DECAP_STAT_DECAP_V4    0 /* outer IPv4 stripped (IPIP) */
#define DECAP_STAT_DECAP_V6    1 /* outer IPv6 stripped (IP6IP6, 4in6) */
#define DECAP_STAT_PASS        2 /* not IPIP/IP6IP6/4in6 at all */
#define DECAP_STAT_NOT_FOR_US  3 /* tunnel packet, outer dst not local */
#define DECAP_STAT_MALFORMED   4 /* truncated or inconsistent headers */
#define DECAP_STAT_UNSUPPORTED 5 /* ours, but not stripped: outer IPv4
				  * options or fragment; tc: in-packet VLAN
				  * tag (see docs/decap.md) */
#define DECAP_STAT_ERROR       6 /* the kernel refused to resize the packet */
#define DECAP_STAT_MAX         7

struct decap_stat {
	__u64 packets;
	__u64 bytes;
};
/* ---- decap ABI end ---- */

/* ---- health-check encapsulation ABI (owned by hc_encap.c) begin ---- */
/*
 * The balancer agent's checks travel the data path (docs/health.md): a check
 * socket of the agent carries SO_MARK = the mark of its real, and hc_encap on
 * the balancer interface's tc egress wraps every packet with a known mark in
 * the outer header a client's packet would get (IPIP, IP6IP6 or 4in6) towards
 * that real. The inner destination stays the VIP, so a check fails exactly
 * when traffic would. Same conventions as above (16-byte network-order
 * addresses + LB_FAMILY_*, explicit padding).
 *
 * Memory: hc_reals HC_MAX_REALS * ~100 B = ~400 KiB at 4096 (hash,
 * preallocated); hc_stats 16 B * HC_STAT_MAX per CPU.
 */
#ifndef HC_MAX_REALS
#define HC_MAX_REALS 4096
#endif

/* ---- hc_reals: HASH[HC_MAX_REALS], __u32 mark -> struct hc_real ----
 * Packets whose mark is not a key leave untouched: the program is on the
 * balancer's own egress and must never change anyone else's traffic. */
struct hc_real {
	__be32 src[4];  /* outer source: the balancer's own address */
	__be32 dst[4];  /* outer destination: the real */
	__u32 family;   /* LB_FAMILY_V4 / LB_FAMILY_V6, of the outer header */
	__u32 flags;    /* reserved: write 0 */
};

/* ---- hc_stats: PERCPU_ARRAY[HC_STAT_MAX] of struct lb_stats, by HC_STAT_* ---- */
#define HC_STAT_ENCAP_V4 0 /* wrapped in outer IPv4 (IPIP) */
#define HC_STAT_ENCAP_V6 1 /* wrapped in outer IPv6 (IP6IP6, 4in6) */
#define HC_STAT_ERROR    2 /* marked but not wrapped: IPv6 in IPv4, or the
			    * kernel refused to resize (dropped: a check
			    * must never leave unwrapped) */
#define HC_STAT_MAX      3
/* ---- health-check encapsulation ABI end ---- */

#endif /* LB_ABI_H */
