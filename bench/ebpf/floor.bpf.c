// SPDX-License-Identifier: GPL-2.0
/* The measurement floor: empty programs on the hottest tracepoints mltap uses. Their BPF-stats
 * run time is what the kernel's accounting and dispatch cost before any work is done. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sched_switch")
int BPF_PROG(empty_switch)
{
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(empty_sys_enter)
{
	return 0;
}
