/* Records the BPF programs in mltap.bpf.c hand to userspace, and the maps they share with it.
 * Included by the kernel side (after vmlinux.h) and by the C++ loader (after <linux/types.h>).
 * Every record is keyed by (pid, start_ticks) and a CLOCK_BOOTTIME timestamp, never pid alone:
 * start_ticks is /proc/<pid>/stat field 22 (clock ticks since boot), the key producers publish. */
#ifndef MLTAP_BPF_EVENTS_H
#define MLTAP_BPF_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define MLTAP_COMM_LEN 16
#define MLTAP_PATH_LEN 256
#define MLTAP_HIST_SLOTS 40 /* log2(ns) buckets: the last one holds everything >= 2^39 ns */
#define MLTAP_MAX_SUFFIXES 16
#define MLTAP_SUFFIX_LEN 16

enum mltap_event_kind {
	MLTAP_EV_EXEC = 1,
	MLTAP_EV_FORK = 2,
	MLTAP_EV_EXIT = 3,
	MLTAP_EV_OOM_KILL = 4,
	MLTAP_EV_SIGNAL = 5,
	MLTAP_EV_FILE = 6,
	MLTAP_EV_TCP_RETRANSMIT = 7,
	MLTAP_EV_TCP_CONNECT_FAILED = 8,
};

/* Index into the per-CPU `lost` counters: which program found the ring buffer full. */
enum mltap_prog {
	MLTAP_PROG_EXEC = 0,
	MLTAP_PROG_FORK = 1,
	MLTAP_PROG_EXIT = 2,
	MLTAP_PROG_SIGNAL = 3,
	MLTAP_PROG_OOM_KILL = 4,
	MLTAP_PROG_TCP_RETRANSMIT = 5,
	MLTAP_PROG_TCP_CONNECT = 6,
	MLTAP_PROG_FILE_SYSCALLS = 7,
	MLTAP_PROG_COUNT = 8,
};

/* Index into the per-CPU `map_full` counters: an insert refused because a map was full, so
 * something was not tracked or measured. Counted rather than silent. */
enum mltap_map_id {
	MLTAP_MAP_TRACKED = 0,     /* a child of a tracked process could not be tracked */
	MLTAP_MAP_RUNQ_HIST = 1,   /* run-queue histogram entry for a process */
	MLTAP_MAP_BIO_HIST = 2,    /* block I/O histogram entry for a process */
	MLTAP_MAP_SOCKETS = 3,     /* socket of a tracked process */
	MLTAP_MAP_FILE_STASH = 4,  /* syscall argument stash (file_syscalls probe) */
	MLTAP_MAP_PROC_NAMES = 5,  /* a process's name at fork or exec (the `proc_names` LRU map) */
	MLTAP_MAP_COUNT = 6,
};

/* mltap_event.flags */
#define MLTAP_EF_TRACKED (1u << 0)       /* subject belongs to the tracked set */
#define MLTAP_EF_OTHER_TRACKED (1u << 1) /* `other` belongs to the tracked set */
#define MLTAP_EF_THREAD (1u << 2)        /* fork/exit of a thread, not of a process */
#define MLTAP_EF_FATAL (1u << 3)         /* signal: the default action kills (or SIGKILL) */
#define MLTAP_EF_HANDLED (1u << 4)       /* signal: the target installed a handler */
#define MLTAP_EF_HANDLER_UNKNOWN (1u << 5) /* signal: tracefs variant cannot see the handler */
#define MLTAP_EF_START_APPROX (1u << 6)  /* other.start_ticks estimated (tracefs fork variant) */

/* mltap_tracked.flags */
#define MLTAP_TF_EXPLICIT (1u << 0)  /* registered by userspace with track() */
#define MLTAP_TF_INHERITED (1u << 1) /* a child of a tracked process, added in the kernel */

/* file event operations (mltap_event.u.file.op) */
enum mltap_file_op {
	MLTAP_FILE_OPEN_WRITE = 1,
	MLTAP_FILE_RENAME = 2,
	MLTAP_FILE_UNLINK = 3,
};

struct mltap_proc {
	__u64 start_ticks; /* /proc/<pid>/stat field 22 of the thread-group leader */
	__u32 pid;         /* tgid */
	__u32 tid;
	char comm[MLTAP_COMM_LEN];
};

/* Value of the `proc_names` LRU hash map (key: tgid), written at every fork of a process and every
 * exec while the file watch runs: names the writer of a watched file that exited before userspace
 * read the event (its /proc/<pid> gone). */
struct mltap_proc_name {
	__u64 start_ticks;
	char comm[MLTAP_COMM_LEN];
};

/* Value of the `tracked` hash map (key: tgid). */
struct mltap_tracked {
	__u64 start_ticks;      /* 0: not known yet (must not be compared) */
	__u64 root_start_ticks; /* the explicitly tracked ancestor (the producer) */
	__u32 root_pid;
	__u32 component_id;     /* userspace's id of the component name; 0 = none */
	__u32 flags;            /* MLTAP_TF_* */
	__u32 parent_pid;
};

/* Value of the per-process histogram maps (key: tgid). */
struct mltap_hist {
	__u64 slots[MLTAP_HIST_SLOTS]; /* slot i counts latencies in [2^i, 2^(i+1)) ns */
	__u64 count;
	__u64 sum_ns;
};

struct mltap_event {
	__u64 ktime_ns; /* bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME */
	__u32 kind;     /* enum mltap_event_kind */
	__u32 flags;    /* MLTAP_EF_* */
	__u32 component_id;
	__u32 root_pid;
	__u64 root_start_ticks;
	struct mltap_proc subject; /* exec/exit: the process; fork: parent; signal/oom: target/victim */
	struct mltap_proc other;   /* fork: child; signal: sender; oom: the task that triggered it */
	union {
		struct {
			__s32 status; /* wait(2) status: code << 8, or the signal (| 0x80 if core) */
			__u32 pad;
		} exit;
		struct {
			__s32 sig;
			__s32 code;   /* si_code */
			__s32 result; /* TRACE_SIGNAL_* */
			__u32 pad;
		} signal;
		struct {
			__u64 total_vm_pages;
			__u64 anon_rss_pages;
			__u64 file_rss_pages;
			__u64 shmem_rss_pages;
			__s32 oom_score_adj;
			__u32 uid;
		} oom;
		struct {
			__u8 saddr[16];
			__u8 daddr[16];
			__u16 family;
			__u16 sport;
			__u16 dport;
			__u16 state;
			__s32 err;   /* sk_err at close (connect failed) */
			__u32 count; /* retransmits folded into this record (rate limit) */
		} tcp;
		struct {
			__u32 op;         /* enum mltap_file_op */
			__s32 ret;        /* syscall return value */
			__u32 open_flags;
			__s32 dfd;        /* directory fd the path is relative to (AT_FDCWD = -100) */
			__s32 dfd2;       /* rename: directory fd of the new path */
			__u32 pad;
		} file;
		__u8 raw[72];
	} u;
};

/* Events that carry paths: exec (path = binary) and file syscalls (path, and the new path of a
 * rename in path2). */
struct mltap_path_event {
	struct mltap_event ev;
	char path[MLTAP_PATH_LEN];
	char path2[MLTAP_PATH_LEN];
};

#endif /* MLTAP_BPF_EVENTS_H */
