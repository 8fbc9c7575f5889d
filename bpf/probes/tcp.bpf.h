/* SPDX-License-Identifier: GPL-2.0 */
/* TCP retransmits and failed connects of sockets of tracked processes. Included once, by
 * mltap.bpf.c (after its common maps and helpers); every probe keeps its tp_btf, raw_tp and
 * tracefs programs. */
#ifndef MLTAP_PROBES_TCP_BPF_H
#define MLTAP_PROBES_TCP_BPF_H

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

#endif /* MLTAP_PROBES_TCP_BPF_H */
