/* SPDX-License-Identifier: GPL-2.0 */
/* OOM kills: every victim on the host. Included once, by mltap.bpf.c (after its common maps and
 * helpers); every probe keeps its tp_btf, raw_tp and tracefs programs. */
#ifndef MLTAP_PROBES_OOM_BPF_H
#define MLTAP_PROBES_OOM_BPF_H

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

#endif /* MLTAP_PROBES_OOM_BPF_H */
