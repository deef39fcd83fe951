// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
/* XDP_PASS and nothing else: the benchmark floor (same call overhead as the
 * balancer, no work) and the program veth peers need so that XDP_TX frames
 * from the balancer are delivered (DESIGN.md, lab facts). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
