/* SPDX-License-Identifier: GPL-2.0 */
/* Model files written, renamed onto or deleted (file_syscalls, off by default). Included once, by
 * mltap.bpf.c (after its common maps and helpers); every probe keeps its tp_btf, raw_tp and
 * tracefs programs. */
#ifndef MLTAP_PROBES_FILE_SYSCALLS_BPF_H
#define MLTAP_PROBES_FILE_SYSCALLS_BPF_H

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

#endif /* MLTAP_PROBES_FILE_SYSCALLS_BPF_H */
