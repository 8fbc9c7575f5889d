/* SPDX-License-Identifier: GPL-2.0 */
/* Block I/O latency of tracked processes. Included once, by mltap.bpf.c (after its common maps
 * and helpers); every probe keeps its tp_btf, raw_tp and tracefs programs. */
#ifndef MLTAP_PROBES_BLOCK_IO_BPF_H
#define MLTAP_PROBES_BLOCK_IO_BPF_H

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

#endif /* MLTAP_PROBES_BLOCK_IO_BPF_H */
