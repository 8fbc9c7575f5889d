/* SPDX-License-Identifier: GPL-2.0 */
/* Fatal signals (and stop requests) reaching tracked processes, with their sender. Included once,
 * by mltap.bpf.c (after its common maps and helpers); every probe keeps its tp_btf, raw_tp and
 * tracefs programs. */
#ifndef MLTAP_PROBES_SIGNAL_BPF_H
#define MLTAP_PROBES_SIGNAL_BPF_H

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

#endif /* MLTAP_PROBES_SIGNAL_BPF_H */
