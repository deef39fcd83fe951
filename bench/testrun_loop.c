// SPDX-License-Identifier: BSD-2-Clause OR GPL-2.0
/*
 * The per-call loop of bench/dataplane_bench.py in C (--loop c, the default): one
 * BPF_PROG_TEST_RUN of the floor program, then one of the measured program, repeat=1 each,
 * `calls` times. The Python loop runs the interpreter between the kernel calls, and its
 * memory traffic evicts the balancer's maps from the caches and TLB; this loop, like
 * Katran's own perf tester (C++), leaves only the system call path between packets.
 * Built at run time by the bench: clang -O2 -shared -fPIC testrun_loop.c -lbpf
 */
#include <bpf/bpf.h>
#include <stddef.h>

/* Frame i of the path is frames + ((start + i) % nframes) * frame_len (all frames of a path
 * have one length). Returns 0, -1 (the kernel refused: errno is set) or -2 (a verdict other
 * than `expect`). Durations (ns, as the kernel reports them) go to dur[] and floor_dur[]. */
int testrun_block(int prog_fd, int floor_fd, const unsigned char *frames, unsigned int frame_len,
		  unsigned int nframes, unsigned int start, const unsigned char *floor_frame,
		  unsigned int floor_len, unsigned int expect, unsigned int calls, unsigned int *dur,
		  unsigned int *floor_dur)
{
	static unsigned char out[4096 + 256];

	for (unsigned int i = 0; i < calls; i++) {
		LIBBPF_OPTS(bpf_test_run_opts, fo, .data_in = floor_frame, .data_size_in = floor_len,
			    .data_out = out, .data_size_out = sizeof(out), .repeat = 1);
		LIBBPF_OPTS(bpf_test_run_opts, po,
			    .data_in = frames + (size_t)((start + i) % nframes) * frame_len,
			    .data_size_in = frame_len, .data_out = out, .data_size_out = sizeof(out),
			    .repeat = 1);

		if (bpf_prog_test_run_opts(floor_fd, &fo))
			return -1;
		floor_dur[i] = fo.duration;
		if (bpf_prog_test_run_opts(prog_fd, &po))
			return -1;
		if (po.retval != expect)
			return -2;
		dur[i] = po.duration;
	}
	return 0;
}
