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

/* Run-queue latency: time a tracked task became runnable. tp_btf programs keep it in task
 * storage (no hashing, freed with the task); raw_tp programs, which cannot, in a hash by tid
 * (entries reset to 0 rather than deleted, removed when the thread exits). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} runq_task SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} runq_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized with `tracked` */
	__type(key, __u32);
	__type(value, struct mltap_hist);
} runq_hist SEC(".maps");

struct bio_start_val {
	__u64 ts;
	__u32 tgid;
	__u32 pad;
};

/* Block I/O: request -> start time and submitting tracked process. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct bio_start_val);
} bio_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized with `tracked` */
	__type(key, __u32);
	__type(value, struct mltap_hist);
} bio_hist SEC(".maps");

struct sock_owner {
	__u64 start_ticks;
	__u64 root_start_ticks;
	__u64 last_retransmit_ns;
	__u32 pid;
	__u32 root_pid;
	__u32 component_id;
	__u32 suppressed;
	char comm[MLTAP_COMM_LEN];
};

/* TCP sockets of tracked processes: sock pointer -> owner. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct sock_owner);
} sockets SEC(".maps");

/* file_syscalls: arguments seen at sys_enter, emitted at sys_exit with the result. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct mltap_path_event);
} file_stash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mltap_path_event);
} scratch SEC(".maps");

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

/* ---- process lifecycle: exec, fork, exit ---- */

static __always_inline int on_exec(struct task_struct *p, struct linux_binprm *bprm,
				   const char *tp_filename, bool btf)
{
	__u32 tgid = TASK_FIELD(btf, p, tgid);
	struct mltap_tracked *t = lookup_tracked(tgid, p, btf);
	struct mltap_path_event *e;
	const char *filename;

	if (!t)
		return 0;
	filename = bprm ? (btf ? bprm->filename : BPF_CORE_READ(bprm, filename)) : tp_filename;
	e = RESERVE(struct mltap_path_event, MLTAP_PROG_EXEC);
	if (!e)
		return 0;
	fill_header(&e->ev, MLTAP_EV_EXEC, t);
	fill_proc(&e->ev.subject, p, btf);
	clear_proc(&e->ev.other);
	e->path2[0] = 0;
	if (bpf_probe_read_kernel_str(e->path, sizeof(e->path), filename) < 0)
		e->path[0] = 0;
	SUBMIT(e);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm, NULL, true);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(exec_raw, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm, NULL, false);
}

SEC("tp/sched/sched_process_exec")
int exec_tp(struct trace_event_raw_sched_process_exec *ctx)
{
	unsigned int off = BPF_CORE_READ(ctx, __data_loc_filename) & 0xFFFF;

	return on_exec((struct task_struct *)bpf_get_current_task(), NULL, (const char *)ctx + off, false);
}

/* `child` may be NULL (tracefs variant): then only its pid is known and its start time is
 * estimated from the clock, which copy_process() read microseconds earlier. */
static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child,
				   __u32 child_pid_tf, bool btf)
{
	__u32 ptgid = TASK_FIELD(btf, parent, tgid);
	struct mltap_tracked *t = lookup_tracked(ptgid, parent, btf);
	struct mltap_tracked nt = {};
	struct mltap_event *e;
	__u32 ctid, ctgid;
	bool thread;

	if (!t)
		return 0;
	if (child) {
		ctid = TASK_FIELD(btf, child, pid);
		ctgid = TASK_FIELD(btf, child, tgid);
	} else {
		ctid = child_pid_tf;
		ctgid = child_pid_tf; /* tracefs cannot tell threads apart; treat as a process */
	}
	thread = ctid != ctgid;
	if (thread && !report_threads)
		return 0;
	if (!thread) {
		nt.start_ticks = child ? task_start_ticks(child, btf) : 0;
		nt.root_pid = t->root_pid;
		nt.root_start_ticks = t->root_start_ticks;
		nt.component_id = t->component_id;
		nt.flags = MLTAP_TF_INHERITED;
		nt.parent_pid = ptgid;
		if (bpf_map_update_elem(&tracked, &ctgid, &nt, BPF_ANY) == 0)
			set_tracked_bit(ctgid);
		else
			count(&map_full, MLTAP_MAP_TRACKED);
	}
	e = RESERVE(struct mltap_event, MLTAP_PROG_FORK);
	if (!e)
		return 0;
	fill_header(e, MLTAP_EV_FORK, t);
	fill_proc(&e->subject, parent, btf);
	if (child) {
		fill_proc(&e->other, child, btf);
	} else {
		e->other.pid = ctgid;
		e->other.tid = ctid;
		e->other.start_ticks = ns_per_tick ? bpf_ktime_get_boot_ns() / ns_per_tick : 0;
		bpf_get_current_comm(&e->other.comm, sizeof(e->other.comm));
		e->flags |= MLTAP_EF_START_APPROX;
	}
	e->flags |= MLTAP_EF_OTHER_TRACKED;
	if (thread)
		e->flags |= MLTAP_EF_THREAD;
	SUBMIT(e);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child, 0, true);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(fork_raw, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child, 0, false);
}

SEC("tp/sched/sched_process_fork")
int fork_tp(struct trace_event_raw_sched_process_fork *ctx)
{
	return on_fork((struct task_struct *)bpf_get_current_task(), NULL,
		       BPF_CORE_READ(ctx, child_pid), false);
}

static __always_inline int on_exit(struct task_struct *task, bool btf)
{
	__u32 tgid = TASK_FIELD(btf, task, tgid);
	__u32 tid = TASK_FIELD(btf, task, pid);
	struct mltap_tracked *t = lookup_tracked(tgid, task, btf);
	struct mltap_tracked copy;
	struct mltap_event *e;
	bool group_dead;
	int status;

	if (!t)
		return 0;
	bpf_map_delete_elem(&runq_start, &tid);
	/* signal->live is decremented before the tracepoint: 0 means the last thread is leaving. */
	group_dead = (btf ? task->signal->live.counter : BPF_CORE_READ(task, signal, live.counter)) == 0;
	if (!group_dead && !report_threads)
		return 0;
	copy = *t;
	if (group_dead) {
		/* Forget the process now, in the kernel, so that a reused pid is never mistaken
		 * for it. Its histograms stay until userspace has read them. */
		bpf_map_delete_elem(&tracked, &tgid);
		clear_tracked_bit(tgid);
	}
	if (BPF_CORE_READ(task, signal, flags) & SIGNAL_GROUP_EXIT)
		status = BPF_CORE_READ(task, signal, group_exit_code);
	else
		status = BPF_CORE_READ(task, exit_code);
	e = RESERVE(struct mltap_event, MLTAP_PROG_EXIT);
	if (!e)
		return 0;
	fill_header(e, MLTAP_EV_EXIT, &copy);
	fill_proc(&e->subject, task, btf);
	clear_proc(&e->other);
	if (!group_dead)
		e->flags |= MLTAP_EF_THREAD;
	e->u.exit.status = status;
	SUBMIT(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit_btf, struct task_struct *task)
{
	return on_exit(task, true);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(exit_raw, struct task_struct *task)
{
	return on_exit(task, false);
}

SEC("tp/sched/sched_process_exit")
int exit_tp(void *ctx)
{
	return on_exit((struct task_struct *)bpf_get_current_task(), false);
}

/* ---- signals ---- */

/* Default action terminates (or dumps core): everything but CHLD, CONT, STOP, TSTP, TTIN,
 * TTOU, URG, WINCH. Real-time signals terminate too. */
static __always_inline bool kills_by_default(int sig)
{
	const __u64 no_kill = (1ULL << 17) | (1ULL << 18) | (1ULL << 19) | (1ULL << 20) |
			      (1ULL << 21) | (1ULL << 22) | (1ULL << 23) | (1ULL << 28);
	if (sig <= 0 || sig > 64)
		return false;
	return !((no_kill >> sig) & 1);
}

/* Requests to stop that a process commonly handles (and then exits): reported even when
 * handled. Other handled signals (profilers' SIGPROF, timers' SIGALRM, ...) are not. */
static __always_inline bool stop_request(int sig)
{
	return sig == 1 || sig == 2 || sig == 3 || sig == 15; /* HUP INT QUIT TERM */
}

/* `task` may be NULL (tracefs variant): the target is then looked up by `target_pid`, and its
 * handler is unknown. */
static __always_inline int on_signal(int sig, struct kernel_siginfo *info, int tp_code,
				     struct task_struct *task, __u32 target_pid, int result,
				     bool btf)
{
	struct task_struct *sender;
	struct mltap_tracked *t;
	struct mltap_event *e;
	unsigned long handler = 0;
	__u32 tgid, flags = 0;

	if (result != TRACE_SIGNAL_DELIVERED && result != TRACE_SIGNAL_LOSE_INFO)
		return 0;
	if (!kills_by_default(sig))
		return 0;
	tgid = task ? TASK_FIELD(btf, task, tgid) : target_pid;
	t = lookup_tracked(tgid, task, btf);
	if (!t)
		return 0;
	if (task) {
		/* sighand->action[sig - 1].sa.sa_handler, with a run-time index */
		const char *sh = (const char *)BPF_CORE_READ(task, sighand);
		unsigned int idx = (unsigned int)(sig - 1) & 63;
		const char *slot = sh + bpf_core_field_offset(struct sighand_struct, action) +
				   idx * bpf_core_type_size(struct k_sigaction) +
				   bpf_core_field_offset(struct k_sigaction, sa) +
				   bpf_core_field_offset(struct sigaction, sa_handler);

		if (bpf_probe_read_kernel(&handler, sizeof(handler), slot) < 0)
			handler = 0;
		if (sig == SIGKILL || handler == 0 /* SIG_DFL */)
			flags |= MLTAP_EF_FATAL;
		else if (handler != 1 /* SIG_IGN */)
			flags |= MLTAP_EF_HANDLED;
		if (!(flags & MLTAP_EF_FATAL) && !((flags & MLTAP_EF_HANDLED) && stop_request(sig)))
			return 0;
	} else {
		if (sig == SIGKILL)
			flags |= MLTAP_EF_FATAL;
		else
			flags |= MLTAP_EF_HANDLER_UNKNOWN;
	}
	e = RESERVE(struct mltap_event, MLTAP_PROG_SIGNAL);
	if (!e)
		return 0;
	fill_header(e, MLTAP_EV_SIGNAL, t);
	e->flags |= flags;
	if (task) {
		fill_proc(&e->subject, task, btf);
	} else {
		clear_proc(&e->subject);
		e->subject.pid = tgid;
		e->subject.tid = tgid;
		e->subject.start_ticks = t->start_ticks;
	}
	sender = (struct task_struct *)bpf_get_current_task();
	fill_proc(&e->other, sender, false);
	if (maybe_tracked(e->other.pid) && bpf_map_lookup_elem(&tracked, &e->other.pid))
		e->flags |= MLTAP_EF_OTHER_TRACKED;
	e->u.signal.sig = sig;
	e->u.signal.code = info ? BPF_CORE_READ(info, si_code) : tp_code;
	e->u.signal.result = result;
	SUBMIT(e);
	return 0;
}

SEC("tp_btf/signal_generate")
int BPF_PROG(signal_btf, int sig, struct kernel_siginfo *info, struct task_struct *task,
	     int group, int result)
{
	return on_signal(sig, info, 0, task, 0, result, true);
}

SEC("raw_tp/signal_generate")
int BPF_PROG(signal_raw, int sig, struct kernel_siginfo *info, struct task_struct *task,
	     int group, int result)
{
	return on_signal(sig, info, 0, task, 0, result, false);
}

SEC("tp/signal/signal_generate")
int signal_tp(struct trace_event_raw_signal_generate *ctx)
{
	return on_signal(BPF_CORE_READ(ctx, sig), NULL, BPF_CORE_READ(ctx, code), NULL,
			 BPF_CORE_READ(ctx, pid), BPF_CORE_READ(ctx, result), false);
}

/* ---- OOM kills: every victim on the host, tracked or not ---- */

static __always_inline int on_oom(struct task_struct *victim, __u32 victim_pid,
				  const struct trace_event_raw_mark_victim *tf, bool btf)
{
	struct task_struct *trigger = (struct task_struct *)bpf_get_current_task();
	struct mltap_tracked *t, *tt;
	struct mltap_event *e;
	__u32 tgid;

	tgid = victim ? TASK_FIELD(btf, victim, tgid) : victim_pid;
	t = lookup_tracked(tgid, victim, btf);
	e = RESERVE(struct mltap_event, MLTAP_PROG_OOM_KILL);
	if (!e)
		return 0;
	fill_header(e, MLTAP_EV_OOM_KILL, t);
	if (victim) {
		fill_proc(&e->subject, victim, btf);
		e->u.oom.total_vm_pages = BPF_CORE_READ(victim, mm, total_vm);
		e->u.oom.oom_score_adj = BPF_CORE_READ(victim, signal, oom_score_adj);
		e->u.oom.uid = BPF_CORE_READ(victim, cred, uid.val);
	} else {
		clear_proc(&e->subject);
		e->subject.pid = tgid;
		e->subject.tid = tgid;
		e->subject.start_ticks = t ? t->start_ticks : 0;
		if (tf) {
			unsigned int off = BPF_CORE_READ(tf, __data_loc_comm) & 0xFFFF;

			bpf_probe_read_kernel_str(e->subject.comm, sizeof(e->subject.comm),
						  (const char *)tf + off);
			e->u.oom.total_vm_pages = BPF_CORE_READ(tf, total_vm);
			e->u.oom.anon_rss_pages = BPF_CORE_READ(tf, anon_rss);
			e->u.oom.file_rss_pages = BPF_CORE_READ(tf, file_rss);
			e->u.oom.shmem_rss_pages = BPF_CORE_READ(tf, shmem_rss);
			e->u.oom.oom_score_adj = BPF_CORE_READ(tf, oom_score_adj);
			e->u.oom.uid = BPF_CORE_READ(tf, uid);
		}
	}
	fill_proc(&e->other, trigger, false);
	tt = lookup_tracked(e->other.pid, trigger, false);
	if (tt)
		e->flags |= MLTAP_EF_OTHER_TRACKED;
	SUBMIT(e);
	return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(oom_btf, struct task_struct *victim)
{
	return on_oom(victim, 0, NULL, true);
}

SEC("raw_tp/mark_victim")
int BPF_PROG(oom_raw, struct task_struct *victim)
{
	return on_oom(victim, 0, NULL, false);
}

SEC("tp/oom/mark_victim")
int oom_tp(struct trace_event_raw_mark_victim *ctx)
{
	return on_oom(NULL, BPF_CORE_READ(ctx, pid), ctx, false);
}

/* ---- run-queue latency of tracked processes (runqlat's method, filtered by tgid) ---- */

struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)t, state);
}

static __always_inline void runq_enqueued(struct task_struct *t, bool btf)
{
	__u64 now = bpf_ktime_get_ns();

	if (btf) {
		__u64 *ts = bpf_task_storage_get(&runq_task, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

		if (ts)
			*ts = now;
	} else {
		__u32 tid = BPF_CORE_READ(t, pid);

		if (bpf_map_update_elem(&runq_start, &tid, &now, BPF_ANY) < 0)
			count(&map_full, MLTAP_MAP_RUNQ_HIST);
	}
}

#define RUNQ_WAKEUP(btf, p)                                                                  \
	do {                                                                                 \
		if (maybe_tracked(TASK_FIELD(btf, p, tgid)))                                 \
			runq_enqueued(p, btf);                                               \
	} while (0)

static __always_inline int runq_switch(struct task_struct *prev, struct task_struct *next,
				       bool btf)
{
	__u32 tgid;
	__u64 *tsp, ts;

	/* A preempted task goes straight back to the run queue. */
	tgid = TASK_FIELD(btf, prev, tgid);
	if (maybe_tracked(tgid) && task_state(prev) == TASK_RUNNING)
		runq_enqueued(prev, btf);

	tgid = TASK_FIELD(btf, next, tgid);
	if (!maybe_tracked(tgid))
		return 0;
	if (btf) {
		tsp = bpf_task_storage_get(&runq_task, next, 0, 0);
	} else {
		__u32 tid = BPF_CORE_READ(next, pid);

		tsp = bpf_map_lookup_elem(&runq_start, &tid);
	}
	if (!tsp || *tsp == 0)
		return 0;
	ts = *tsp;
	*tsp = 0;
	hist_add(&runq_hist, MLTAP_MAP_RUNQ_HIST, tgid, bpf_ktime_get_ns() - ts);
	return 0;
}

/* Preferred: one program per context switch and none per wakeup. With CONFIG_SCHED_INFO the
 * scheduler itself adds every wait on the run queue to task->sched_info.run_delay as the task
 * switches in (and counts switch-ins in pcount). Reading both at each switch-in of a tracked
 * task gives the wait before its previous switch-in: exact, one time slice late. */
struct runq_si_val {
	__u64 run_delay;
	__u64 pcount;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct runq_si_val);
} runq_si SEC(".maps");

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_si_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 tgid = next->tgid;
	struct runq_si_val *v;
	__u64 delay, count;

	if (!maybe_tracked(tgid))
		return 0;
	v = bpf_task_storage_get(&runq_si, next, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!v)
		return 0;
	delay = next->sched_info.run_delay;
	count = next->sched_info.pcount;
	if (v->pcount && count == v->pcount + 1 && delay >= v->run_delay)
		hist_add(&runq_hist, MLTAP_MAP_RUNQ_HIST, tgid, delay - v->run_delay);
	v->run_delay = delay;
	v->pcount = count;
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(wakeup_btf, struct task_struct *p)
{
	RUNQ_WAKEUP(true, p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(wakeup_new_btf, struct task_struct *p)
{
	RUNQ_WAKEUP(true, p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return runq_switch(prev, next, true);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(wakeup_raw, struct task_struct *p)
{
	RUNQ_WAKEUP(false, p);
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(wakeup_new_raw, struct task_struct *p)
{
	RUNQ_WAKEUP(false, p);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(switch_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return runq_switch(prev, next, false);
}

/* ---- block I/O latency of tracked processes ----
 * Started where the request is accounted, in the submitter's context; buffered writeback is
 * submitted by kworkers and so is not attributed to the process that dirtied the pages. */

static __always_inline int bio_begin(struct request *rq)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct bio_start_val v = {};
	__u64 key = (__u64)rq;

	if (!maybe_tracked(tgid))
		return 0;
	v.ts = bpf_ktime_get_ns();
	v.tgid = tgid;
	bpf_map_update_elem(&bio_start, &key, &v, BPF_ANY);
	return 0;
}

static __always_inline int bio_end(struct request *rq)
{
	__u64 key = (__u64)rq;
	struct bio_start_val *v = bpf_map_lookup_elem(&bio_start, &key);

	if (!v)
		return 0;
	hist_add(&bio_hist, MLTAP_MAP_BIO_HIST, v->tgid, bpf_ktime_get_ns() - v->ts);
	bpf_map_delete_elem(&bio_start, &key);
	return 0;
}

SEC("tp_btf/block_io_start")
int BPF_PROG(bio_start_btf, struct request *rq)
{
	return bio_begin(rq);
}

SEC("tp_btf/block_io_done")
int BPF_PROG(bio_done_btf, struct request *rq)
{
	return bio_end(rq);
}

SEC("raw_tp/block_io_start")
int BPF_PROG(bio_start_raw, struct request *rq)
{
	return bio_begin(rq);
}

SEC("raw_tp/block_io_done")
int BPF_PROG(bio_done_raw, struct request *rq)
{
	return bio_end(rq);
}

/* Kernels before 6.5 have no block_io_start/done: insert (submitter) to complete. */
SEC("tp_btf/block_rq_insert")
int BPF_PROG(bio_insert_btf, struct request *rq)
{
	return bio_begin(rq);
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(bio_complete_btf, struct request *rq)
{
	return bio_end(rq);
}

/* ---- TCP: retransmits and failed connects of sockets owned by tracked processes ---- */

static __always_inline void remember_socket(const struct sock *sk, __u32 tgid)
{
	__u64 key = (__u64)sk;
	struct mltap_tracked *t;
	struct sock_owner o = {};

	if (bpf_map_lookup_elem(&sockets, &key))
		return;
	t = bpf_map_lookup_elem(&tracked, &tgid);
	if (!t)
		return;
	o.pid = tgid;
	o.start_ticks = t->start_ticks;
	o.root_pid = t->root_pid;
	o.root_start_ticks = t->root_start_ticks;
	o.component_id = t->component_id;
	bpf_get_current_comm(&o.comm, sizeof(o.comm));
	if (bpf_map_update_elem(&sockets, &key, &o, BPF_NOEXIST) < 0)
		count(&map_full, MLTAP_MAP_SOCKETS);
}

static __always_inline void fill_tcp(struct mltap_event *e, const struct sock *sk,
				     const struct sock_owner *o, __u32 kind)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	e->ktime_ns = bpf_ktime_get_boot_ns();
	e->kind = kind;
	e->flags = MLTAP_EF_TRACKED;
	e->component_id = o->component_id;
	e->root_pid = o->root_pid;
	e->root_start_ticks = o->root_start_ticks;
	e->subject.pid = o->pid;
	e->subject.tid = o->pid;
	e->subject.start_ticks = o->start_ticks;
	__builtin_memcpy(e->subject.comm, o->comm, sizeof(e->subject.comm));
	clear_proc(&e->other);
	__builtin_memset(&e->u, 0, sizeof(e->u));
	e->u.tcp.family = family;
	e->u.tcp.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->u.tcp.dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->u.tcp.state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (family == AF_INET) {
		BPF_CORE_READ_INTO(&e->u.tcp.saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO(&e->u.tcp.daddr, sk, __sk_common.skc_daddr);
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->u.tcp.saddr, sk,
				   __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->u.tcp.daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

/* Sockets a tracked process sends on (covers accepted connections and ones opened before
 * tracking began). */
static __always_inline int on_sendmsg(const struct sock *sk)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (maybe_tracked(tgid))
		remember_socket(sk, tgid);
	return 0;
}

static __always_inline int on_state(const struct sock *sk, int oldstate, int newstate)
{
	struct sock_owner *o;
	struct mltap_event *e;
	__u64 key = (__u64)sk;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		/* connect(): in the caller's context */
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;

		if (maybe_tracked(tgid))
			remember_socket(sk, tgid);
		return 0;
	}
	if (newstate != TCP_CLOSE)
		return 0;
	o = bpf_map_lookup_elem(&sockets, &key);
	if (!o)
		return 0;
	if (oldstate == TCP_SYN_SENT) {
		e = RESERVE(struct mltap_event, MLTAP_PROG_TCP_CONNECT);
		if (e) {
			fill_tcp(e, sk, o, MLTAP_EV_TCP_CONNECT_FAILED);
			e->u.tcp.state = oldstate;
			e->u.tcp.err = BPF_CORE_READ(sk, sk_err);
			SUBMIT(e);
		}
	}
	bpf_map_delete_elem(&sockets, &key);
	return 0;
}

static __always_inline int on_retransmit(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_owner *o = bpf_map_lookup_elem(&sockets, &key);
	struct mltap_event *e;
	__u64 now;

	if (!o)
		return 0;
	now = bpf_ktime_get_ns();
	if (o->last_retransmit_ns && now - o->last_retransmit_ns < retransmit_min_interval_ns) {
		__sync_fetch_and_add(&o->suppressed, 1);
		return 0;
	}
	e = RESERVE(struct mltap_event, MLTAP_PROG_TCP_RETRANSMIT);
	if (!e)
		return 0;
	fill_tcp(e, sk, o, MLTAP_EV_TCP_RETRANSMIT);
	e->u.tcp.count = o->suppressed + 1;
	o->suppressed = 0;
	o->last_retransmit_ns = now;
	SUBMIT(e);
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(sendmsg_btf, const struct sock *sk)
{
	return on_sendmsg(sk);
}

SEC("raw_tp/tcp_sendmsg_locked")
int BPF_PROG(sendmsg_raw, const struct sock *sk)
{
	return on_sendmsg(sk);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(state_btf, const struct sock *sk, const int oldstate, const int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(state_raw, const struct sock *sk, const int oldstate, const int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retransmit_btf, const struct sock *sk)
{
	return on_retransmit(sk);
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(retransmit_raw, const struct sock *sk)
{
	return on_retransmit(sk);
}

/* ---- file_syscalls (off by default): model files written, renamed onto or deleted by tracked
 * processes, seen at the system call. Attaching any syscall tracepoint moves every task's
 * system calls to the slow path, so this costs untracked processes too (see docs/ebpf.md). ---- */

#if defined(__TARGET_ARCH_x86)
#define NR_open 2
#define NR_creat 85
#define NR_rename 82
#define NR_unlink 87
#define NR_openat 257
#define NR_unlinkat 263
#define NR_renameat 264
#define NR_renameat2 316
#define NR_openat2 437
#define AT_FDCWD -100

/* Does the path end with one of the configured suffixes? */
static __always_inline bool path_matches(const char *buf, long len)
{
	if (file_match_all)
		return true;
	if (len <= 1)
		return false;
	len -= 1; /* bpf_probe_read_user_str counts the NUL */
	for (__u32 i = 0; i < MLTAP_MAX_SUFFIXES; i++) {
		__u32 sl;
		bool same = true;

		if (i >= n_suffixes)
			break;
		sl = suffix_lens[i];
		if (sl == 0 || sl > MLTAP_SUFFIX_LEN || sl > len)
			continue;
		for (__u32 j = 0; j < MLTAP_SUFFIX_LEN; j++) {
			if (j >= sl)
				break;
			if (buf[(len - sl + j) & (MLTAP_PATH_LEN - 1)] != suffixes[i][j]) {
				same = false;
				break;
			}
		}
		if (same)
			return true;
	}
	return false;
}

static __always_inline bool file_syscall(long id)
{
	switch (id) {
	case NR_open: case NR_creat: case NR_openat: case NR_openat2: case NR_rename:
	case NR_renameat: case NR_renameat2: case NR_unlink: case NR_unlinkat:
		return true;
	default:
		return false;
	}
}

/* Syscall argument n: direct loads for tp_btf (typed pt_regs), probe reads for raw_tp, the
 * record's args[] for the tracefs variant. Read only after the cheap filters passed. */
#define MODE_BTF 0
#define MODE_RAW 1
#define MODE_TP 2
static __always_inline unsigned long sysarg(int mode, struct pt_regs *regs,
					    struct trace_event_raw_sys_enter *tp, int n)
{
	if (mode == MODE_TP)
		return n == 0 ? tp->args[0] : n == 1 ? tp->args[1] : n == 2 ? tp->args[2] : tp->args[3];
	if (mode == MODE_BTF)
		return n == 0 ? regs->di : n == 1 ? regs->si : n == 2 ? regs->dx : regs->r10;
	return n == 0 ? BPF_CORE_READ(regs, di) : n == 1 ? BPF_CORE_READ(regs, si) :
	       n == 2 ? BPF_CORE_READ(regs, dx) : BPF_CORE_READ(regs, r10);
}

static __always_inline int file_enter(long id, struct pt_regs *regs,
				      struct trace_event_raw_sys_enter *tp, int mode)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, tid = (__u32)pid_tgid, zero = 0;
	const char *p1 = NULL, *p2 = NULL;
	struct mltap_path_event *s;
	struct mltap_tracked *t;
	__u32 op, flags = 0;
	__s32 dfd = AT_FDCWD, dfd2 = AT_FDCWD;
	unsigned long a0, a1, a2, a3;
	bool match;
	long n1, n2 = 0;

	if (!maybe_tracked(tgid) || !file_syscall(id))
		return 0;
	a0 = sysarg(mode, regs, tp, 0);
	a1 = sysarg(mode, regs, tp, 1);
	a2 = sysarg(mode, regs, tp, 2);
	a3 = sysarg(mode, regs, tp, 3);
	switch (id) {
	case NR_open: p1 = (const char *)a0; flags = a1; op = MLTAP_FILE_OPEN_WRITE; break;
	case NR_creat: p1 = (const char *)a0; flags = O_CREAT | O_WRONLY | O_TRUNC;
		op = MLTAP_FILE_OPEN_WRITE; break;
	case NR_openat: dfd = a0; p1 = (const char *)a1; flags = a2; op = MLTAP_FILE_OPEN_WRITE;
		break;
	case NR_openat2: {
		__u64 f = 0;

		dfd = a0;
		p1 = (const char *)a1;
		bpf_probe_read_user(&f, sizeof(f), (const void *)a2); /* open_how.flags */
		flags = f;
		op = MLTAP_FILE_OPEN_WRITE;
		break;
	}
	case NR_rename: p1 = (const char *)a0; p2 = (const char *)a1; op = MLTAP_FILE_RENAME;
		break;
	case NR_renameat:
	case NR_renameat2: dfd = a0; p1 = (const char *)a1; dfd2 = a2; p2 = (const char *)a3;
		op = MLTAP_FILE_RENAME; break;
	case NR_unlink: p1 = (const char *)a0; op = MLTAP_FILE_UNLINK; break;
	case NR_unlinkat: dfd = a0; p1 = (const char *)a1; op = MLTAP_FILE_UNLINK; break;
	default: return 0;
	}
	if (op == MLTAP_FILE_OPEN_WRITE && !(flags & (O_WRONLY | O_RDWR | O_TRUNC | O_CREAT)))
		return 0;
	t = bpf_map_lookup_elem(&tracked, &tgid);
	if (!t)
		return 0;
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	n1 = bpf_probe_read_user_str(s->path, sizeof(s->path), p1);
	if (n1 < 0)
		return 0;
	match = path_matches(s->path, n1);
	s->path2[0] = 0;
	if (p2) {
		n2 = bpf_probe_read_user_str(s->path2, sizeof(s->path2), p2);
		if (n2 > 0 && !match)
			match = path_matches(s->path2, n2);
	}
	if (!match)
		return 0;
	fill_header(&s->ev, MLTAP_EV_FILE, t);
	s->ev.subject.pid = tgid;
	s->ev.subject.tid = tid;
	s->ev.subject.start_ticks = t->start_ticks;
	bpf_get_current_comm(&s->ev.subject.comm, sizeof(s->ev.subject.comm));
	clear_proc(&s->ev.other);
	s->ev.u.file.op = op;
	s->ev.u.file.open_flags = flags;
	s->ev.u.file.dfd = dfd;
	s->ev.u.file.dfd2 = dfd2;
	if (bpf_map_update_elem(&file_stash, &tid, s, BPF_ANY) < 0)
		count(&map_full, MLTAP_MAP_FILE_STASH);
	return 0;
}

static __always_inline int file_exit(long id, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, tid = (__u32)pid_tgid;
	struct mltap_path_event *s;

	if (!maybe_tracked(tgid) || !file_syscall(id))
		return 0;
	s = bpf_map_lookup_elem(&file_stash, &tid);
	if (!s)
		return 0;
	if (ret >= 0) {
		s->ev.u.file.ret = ret;
		s->ev.ktime_ns = bpf_ktime_get_boot_ns();
		if (bpf_ringbuf_output(&events, s, sizeof(*s), wakeup_flags()) < 0)
			count(&lost, MLTAP_PROG_FILE_SYSCALLS);
	}
	bpf_map_delete_elem(&file_stash, &tid);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter_btf, struct pt_regs *regs, long id)
{
	return file_enter(id, regs, NULL, MODE_BTF);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit_btf, struct pt_regs *regs, long ret)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!maybe_tracked(tgid))
		return 0;
	return file_exit(regs->orig_ax, ret);
}

SEC("raw_tp/sys_enter")
int BPF_PROG(sys_enter_raw, struct pt_regs *regs, long id)
{
	return file_enter(id, regs, NULL, MODE_RAW);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(sys_exit_raw, struct pt_regs *regs, long ret)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!maybe_tracked(tgid))
		return 0;
	return file_exit(BPF_CORE_READ(regs, orig_ax), ret);
}

SEC("tp/raw_syscalls/sys_enter")
int sys_enter_tp(struct trace_event_raw_sys_enter *ctx)
{
	return file_enter(ctx->id, NULL, ctx, MODE_TP);
}

SEC("tp/raw_syscalls/sys_exit")
int sys_exit_tp(struct trace_event_raw_sys_exit *ctx)
{
	return file_exit(ctx->id, ctx->ret);
}
#endif /* __TARGET_ARCH_x86 */
