/* SPDX-License-Identifier: GPL-2.0 */
/* Run-queue latency of tracked processes (runqlat's method). Included once, by mltap.bpf.c (after
 * its common maps and helpers); every probe keeps its tp_btf, raw_tp and tracefs programs. */
#ifndef MLTAP_PROBES_RUNQUEUE_BPF_H
#define MLTAP_PROBES_RUNQUEUE_BPF_H

/* Run-queue latency: time a tracked task became runnable. tp_btf programs keep it in task
 * storage (no hashing, freed with the task); raw_tp programs, which cannot, in a hash by tid
 * (runq_start in mltap.bpf.c: entries reset to 0 rather than deleted, removed when the thread
 * exits). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} runq_task SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized with `tracked` */
	__type(key, __u32);
	__type(value, struct mltap_hist);
} runq_hist SEC(".maps");

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

#endif /* MLTAP_PROBES_RUNQUEUE_BPF_H */
