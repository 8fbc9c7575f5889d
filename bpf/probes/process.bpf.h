/* SPDX-License-Identifier: GPL-2.0 */
/* exec, fork and exit of tracked processes. Included once, by mltap.bpf.c (after its common maps
 * and helpers); every probe keeps its tp_btf, raw_tp and tracefs programs. */
#ifndef MLTAP_PROBES_PROCESS_BPF_H
#define MLTAP_PROBES_PROCESS_BPF_H

/* ---- process lifecycle: exec, fork, exit ---- */

/* proc_names: every new process's name and start time (at fork: its parent's name; at exec: its
 * own), host-wide while the file watch runs, for the writers gone when their event is read. */
static __always_inline void record_name(__u32 tgid, struct task_struct *p, bool btf)
{
	struct mltap_proc_name n = {};

	n.start_ticks = task_start_ticks(p, btf);
	if (btf)
		__builtin_memcpy(n.comm, p->comm, sizeof(n.comm));
	else if (BPF_CORE_READ_STR_INTO(&n.comm, p, comm) < 0)
		n.comm[0] = 0;
	if (bpf_map_update_elem(&proc_names, &tgid, &n, BPF_ANY) < 0)
		count(&map_full, MLTAP_MAP_PROC_NAMES);
}

static __always_inline int on_exec(struct task_struct *p, struct linux_binprm *bprm,
				   const char *tp_filename, bool btf)
{
	__u32 tgid = TASK_FIELD(btf, p, tgid);
	struct mltap_tracked *t;
	struct mltap_path_event *e;
	const char *filename;

	if (record_proc_names)
		record_name(tgid, p, btf);
	t = lookup_tracked(tgid, p, btf);
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

	if (record_proc_names) {
		if (!child) /* tracefs: no task to read; at least no stale name under this pid */
			bpf_map_delete_elem(&proc_names, &child_pid_tf);
		else if (TASK_FIELD(btf, child, pid) == TASK_FIELD(btf, child, tgid))
			record_name(TASK_FIELD(btf, child, tgid), child, btf);
	}
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

#endif /* MLTAP_PROBES_PROCESS_BPF_H */
