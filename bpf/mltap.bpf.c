// SPDX-License-Identifier: GPL-2.0
/* mltap's kernel side: system events of tracked processes (the ring writers, their threads and
 * children) and host-wide OOM kills. libbpf-tools style, CO-RE against the running kernel's BTF.
 *
 * Every logical probe exists as a tp_btf program (preferred: typed arguments, direct loads) and a
 * raw_tp program (same arguments, probe reads); some also as a tracefs tracepoint program (needs
 * tracefs mounted). The loader picks one variant per probe after probing the kernel and disables
 * autoload for the others.
 *
 * Untracked processes cost one inlined array lookup (the `tracked_bits` bitmap) and no event:
 * only a set bit leads to the `tracked` hash map. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "mltap_events.h"

char LICENSE[] SEC("license") = "GPL";

/* Tunables, set by the loader before load. */
const volatile __u64 ns_per_tick = 10000000;          /* 1e9 / sysconf(_SC_CLK_TCK) */
const volatile bool report_threads = false;           /* fork/exit events for threads too */
const volatile __u64 retransmit_min_interval_ns = 1000000000; /* per socket */
const volatile bool file_match_all = false;           /* file_syscalls: emit without suffix check */
const volatile __u32 n_suffixes = 0;
/* Wake the reader only when this much is waiting (it also polls every 100 ms): a wakeup per
 * event costs the traced process microseconds (irq_work + waking the reader). */
const volatile __u64 wakeup_bytes = 64 * 1024;
/* Record every new process's name at fork and exec (proc_names): on while the file watch runs. */
const volatile bool record_proc_names = false;
const volatile __u32 suffix_lens[MLTAP_MAX_SUFFIXES] = {};
const volatile char suffixes[MLTAP_MAX_SUFFIXES][MLTAP_SUFFIX_LEN] = {};

#define TASK_RUNNING 0
#define SIGNAL_GROUP_EXIT 0x00000004 /* include/linux/sched/signal.h */
#define SIGKILL 9
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define TRACE_SIGNAL_DELIVERED 0
#define TRACE_SIGNAL_LOSE_INFO 4

/* ---- maps ---- */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024); /* resized by the loader */
} events SEC(".maps");

/* tgid -> what the tracked process belongs to. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized by the loader */
	__type(key, __u32);
	__type(value, struct mltap_tracked);
} tracked SEC(".maps");

/* One bit per tgid, mirrors the keys of `tracked`. Array lookups are inlined by the verifier, so
 * this is the whole cost of the filter for untracked processes. Sized from pid_max by the
 * loader; a pid beyond it falls back to the hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE); /* userspace sets bits with atomic ops, too */
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} tracked_bits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MLTAP_PROG_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MLTAP_MAP_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} map_full SEC(".maps");

/* Run-queue latency for the raw_tp programs (probes/runqueue.bpf.h): the time a tracked thread
 * became runnable, by tid. Here because the exit probe (probes/process.bpf.h) removes a thread's
 * entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} runq_start SEC(".maps");

/* tgid -> name and start time at its fork or last exec, host-wide (probes/process.bpf.h), for the
 * file watch's actors that are gone by the time their event is read. LRU: the least recently
 * written go first; a failed insert is counted (map_full). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct mltap_proc_name);
} proc_names SEC(".maps");

static const struct mltap_hist zero_hist;

/* ---- helpers ---- */

static __always_inline void count(void *map, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline bool maybe_tracked(__u32 tgid)
{
	__u32 word = tgid >> 6;
	__u64 *bits = bpf_map_lookup_elem(&tracked_bits, &word);
	if (!bits)
		return true; /* beyond the bitmap: let the hash decide */
	return (*bits >> (tgid & 63)) & 1;
}

static __always_inline void set_tracked_bit(__u32 tgid)
{
	__u32 word = tgid >> 6;
	__u64 *bits = bpf_map_lookup_elem(&tracked_bits, &word);
	if (bits)
		__sync_fetch_and_or(bits, 1ULL << (tgid & 63));
}

static __always_inline void clear_tracked_bit(__u32 tgid)
{
	__u32 word = tgid >> 6;
	__u64 *bits = bpf_map_lookup_elem(&tracked_bits, &word);
	if (bits)
		__sync_fetch_and_and(bits, ~(1ULL << (tgid & 63)));
}

struct task_struct___pre55 {
	u64 real_start_time;
} __attribute__((preserve_access_index));

/* Direct loads where the verifier knows the type (tp_btf), probe reads otherwise (raw_tp and
 * tracefs variants). `btf` is a constant after inlining, so only one branch survives. */
#define TASK_FIELD(btf, t, f) ((btf) ? (t)->f : BPF_CORE_READ(t, f))

/* /proc/<pid>/stat field 22: nsec_to_clock_t(group_leader->start_boottime). */
static __always_inline __u64 task_start_ticks(struct task_struct *t, bool btf)
{
	__u64 ns;

	if (btf) {
		ns = t->group_leader->start_boottime;
	} else {
		struct task_struct *leader = BPF_CORE_READ(t, group_leader);

		if (bpf_core_field_exists(leader->start_boottime))
			ns = BPF_CORE_READ(leader, start_boottime);
		else
			ns = BPF_CORE_READ((struct task_struct___pre55 *)leader, real_start_time);
	}
	return ns_per_tick ? ns / ns_per_tick : 0;
}

/* The tracked entry of `tgid`, or NULL. An entry whose start time no longer matches is a pid
 * that was reused after userspace registered it: dropped, never reported. */
static __always_inline struct mltap_tracked *lookup_tracked(__u32 tgid, struct task_struct *t,
							    bool btf)
{
	struct mltap_tracked *v;

	if (!maybe_tracked(tgid))
		return NULL;
	v = bpf_map_lookup_elem(&tracked, &tgid);
	if (!v || !t || v->start_ticks == 0)
		return v;
	if (task_start_ticks(t, btf) != v->start_ticks) {
		bpf_map_delete_elem(&tracked, &tgid);
		clear_tracked_bit(tgid);
		return NULL;
	}
	return v;
}

static __always_inline void fill_proc(struct mltap_proc *p, struct task_struct *t, bool btf)
{
	p->pid = TASK_FIELD(btf, t, tgid);
	p->tid = TASK_FIELD(btf, t, pid);
	p->start_ticks = task_start_ticks(t, btf);
	if (btf)
		__builtin_memcpy(p->comm, t->comm, sizeof(p->comm));
	else if (BPF_CORE_READ_STR_INTO(&p->comm, t, comm) < 0)
		p->comm[0] = 0;
}

static __always_inline void clear_proc(struct mltap_proc *p)
{
	p->pid = 0;
	p->tid = 0;
	p->start_ticks = 0;
	p->comm[0] = 0;
}

static __always_inline void fill_header(struct mltap_event *e, __u32 kind,
					const struct mltap_tracked *t)
{
	e->ktime_ns = bpf_ktime_get_boot_ns();
	e->kind = kind;
	e->flags = t ? MLTAP_EF_TRACKED : 0;
	e->component_id = t ? t->component_id : 0;
	e->root_pid = t ? t->root_pid : 0;
	e->root_start_ticks = t ? t->root_start_ticks : 0;
	__builtin_memset(&e->u, 0, sizeof(e->u));
}

static __always_inline __u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									       : BPF_RB_NO_WAKEUP;
}

#define SUBMIT(e) bpf_ringbuf_submit(e, wakeup_flags())

#define RESERVE(type, prog)                                                        \
	({                                                                         \
		type *__e = bpf_ringbuf_reserve(&events, sizeof(type), 0);          \
		if (!__e)                                                          \
			count(&lost, prog);                                        \
		__e;                                                               \
	})

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline void hist_add(void *map, __u32 map_id, __u32 tgid, __u64 delta)
{
	struct mltap_hist *h = bpf_map_lookup_elem(map, &tgid);
	__u32 slot;

	if (!h) {
		bpf_map_update_elem(map, &tgid, &zero_hist, BPF_NOEXIST);
		h = bpf_map_lookup_elem(map, &tgid);
		if (!h) {
			count(&map_full, map_id);
			return;
		}
	}
	slot = log2_u64(delta);
	if (slot >= MLTAP_HIST_SLOTS)
		slot = MLTAP_HIST_SLOTS - 1;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum_ns, delta);
}

/* ---- the probes, one file per group ---- */

#include "probes/process.bpf.h"
#include "probes/signal.bpf.h"
#include "probes/oom.bpf.h"
#include "probes/runqueue.bpf.h"
#include "probes/block_io.bpf.h"
#include "probes/tcp.bpf.h"
#include "probes/file_syscalls.bpf.h"
