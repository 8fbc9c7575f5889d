// Kernel records (bpf/mltap_events.h) from the ring buffer, decoded into SystemEvents and
// delivered; the tracked set in userspace follows forks, execs and exits.
#include <arpa/inet.h>
#include <bpf/bpf.h>

#include "core/log.hpp"

#include <cstring>

#include "bpf/src/tracer_impl.hpp"

namespace mltap::bpf {

using core::EventKind;
using core::FileOp;
using core::ProcessRef;
using core::SystemEvent;

namespace {

std::string comm_of(const char* c) { return std::string(c, strnlen(c, MLTAP_COMM_LEN)); }

std::string path_of(const char* p) { return std::string(p, strnlen(p, MLTAP_PATH_LEN)); }

}  // namespace

ProcessRef Tracer::Impl::ref_of(const mltap_proc& p) {
  ProcessRef r;
  r.pid = p.pid;
  r.tid = p.tid;
  r.start_ticks = p.start_ticks;
  r.comm = comm_of(p.comm);
  return r;
}

std::string Tracer::Impl::addr_text(std::uint16_t family, const std::uint8_t* a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET) inet_ntop(AF_INET, a, buf, sizeof(buf));
  else if (family == AF_INET6) inet_ntop(AF_INET6, a, buf, sizeof(buf));
  return buf;
}

int Tracer::Impl::on_ring_record(void* ctx, void* data, size_t size) {
  static_cast<Impl*>(ctx)->on_record(data, size);
  return 0;
}

void Tracer::Impl::on_record(const void* data, std::size_t size) {
  if (size < sizeof(mltap_event)) {
    std::lock_guard lk(mu);
    ++userspace_lost;
    return;
  }
  mltap_event e;
  std::memcpy(&e, data, sizeof(e));
  const bool with_paths = e.kind == MLTAP_EV_EXEC || e.kind == MLTAP_EV_FILE;
  if (with_paths && size < sizeof(mltap_path_event)) {
    std::lock_guard lk(mu);
    ++userspace_lost;
    return;
  }
  const auto* pe = with_paths ? static_cast<const mltap_path_event*>(data) : nullptr;

  SystemEvent ev;
  ev.boot_ns = e.ktime_ns;
  ev.unix_ns = clock.to_unix_ns(e.ktime_ns);
  ev.subject = ref_of(e.subject);
  ev.other = ref_of(e.other);
  ev.tracked = e.flags & MLTAP_EF_TRACKED;
  ev.other_tracked = e.flags & MLTAP_EF_OTHER_TRACKED;
  ev.root.pid = e.root_pid;
  ev.root.start_ticks = e.root_start_ticks;
  {
    std::lock_guard lk(mu);
    ev.component = component_name(e.component_id);
    if (auto it = procs.find(e.root_pid); it != procs.end()) ev.root.comm = it->second.comm;
  }
  switch (e.kind) {
    case MLTAP_EV_EXEC:
      ev.kind = EventKind::exec;
      ev.path = path_of(pe->path);
      ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::exec)];
      break;
    case MLTAP_EV_FORK:
      ev.kind = EventKind::fork;
      ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::fork)];
      if (e.flags & MLTAP_EF_START_APPROX) {
        // tracefs variant: correct the child's start time from /proc and in the kernel.
        if (auto stc = naming::read_proc_stat(ev.other.pid, opts.proc_root)) {
          ev.other.start_ticks = stc->start_ticks;
          mltap_tracked v{};
          if (tracked_fd >= 0 && bpf_map_lookup_elem(tracked_fd, &ev.other.pid, &v) == 0 &&
              v.start_ticks == 0) {
            v.start_ticks = stc->start_ticks;
            bpf_map_update_elem(tracked_fd, &ev.other.pid, &v, BPF_EXIST);
          }
        }
      }
      break;
    case MLTAP_EV_EXIT: {
      ev.kind = EventKind::exit;
      ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::exit)];
      const int status = e.u.exit.status;
      if (status & 0x7f) {
        ev.signal = status & 0x7f;
        ev.core_dumped = status & 0x80;
        ev.fatal = true;
      } else {
        ev.exit_code = (status >> 8) & 0xff;
      }
      break;
    }
    case MLTAP_EV_OOM_KILL:
      ev.kind = EventKind::oom_kill;
      ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::oom_kill)];
      ev.memory_bytes = e.u.oom.total_vm_pages * static_cast<std::uint64_t>(page_size);
      ev.rss_bytes = (e.u.oom.anon_rss_pages + e.u.oom.file_rss_pages + e.u.oom.shmem_rss_pages) *
                     static_cast<std::uint64_t>(page_size);
      ev.oom_score_adj = e.u.oom.oom_score_adj;
      if (!ev.tracked) ev.component.clear();
      break;
    case MLTAP_EV_SIGNAL:
      ev.kind = EventKind::signal;
      ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::signal)];
      ev.signal = e.u.signal.sig;
      ev.signal_code = e.u.signal.code;
      ev.fatal = e.flags & MLTAP_EF_FATAL;
      ev.handled = e.flags & MLTAP_EF_HANDLED;
      break;
    case MLTAP_EV_TCP_RETRANSMIT:
    case MLTAP_EV_TCP_CONNECT_FAILED:
      ev.kind = e.kind == MLTAP_EV_TCP_RETRANSMIT ? EventKind::tcp_retransmit
                                                  : EventKind::tcp_connect_failed;
      ev.source = "bpf:" + method_used[static_cast<std::size_t>(
                               e.kind == MLTAP_EV_TCP_RETRANSMIT ? Probe::tcp_retransmit
                                                                 : Probe::tcp_connect)];
      ev.tcp.saddr = addr_text(e.u.tcp.family, e.u.tcp.saddr);
      ev.tcp.daddr = addr_text(e.u.tcp.family, e.u.tcp.daddr);
      ev.tcp.sport = e.u.tcp.sport;
      ev.tcp.dport = e.u.tcp.dport;
      ev.tcp.error = e.u.tcp.err;
      ev.tcp.count = e.u.tcp.count;
      break;
    case MLTAP_EV_FILE: {
      ev.kind = EventKind::file_change;
      ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::file_syscalls)];
      const std::string p1 = resolve(ev.subject.pid, e.u.file.dfd, path_of(pe->path));
      const std::string p2 = resolve(ev.subject.pid, e.u.file.dfd2, path_of(pe->path2));
      if (e.u.file.op == MLTAP_FILE_OPEN_WRITE) {
        ev.file_op = FileOp::written;
        ev.path = p1;
      } else if (e.u.file.op == MLTAP_FILE_UNLINK) {
        ev.file_op = FileOp::deleted;
        ev.path = p1;
      } else if (e.u.file.op == MLTAP_FILE_RENAME) {
        if (name_matches(basename_of(p2))) {
          ev.file_op = FileOp::renamed_onto;
          ev.path = p2;
          ev.old_path = p1;
        } else {
          ev.file_op = FileOp::renamed_away;
          ev.path = p1;
          ev.old_path = p2;
        }
      }
      if (!name_matches(basename_of(ev.path))) return;  // kernel pre-filter is coarser
      break;
    }
    default: {
      std::lock_guard lk(mu);
      ++userspace_lost;
      return;
    }
  }
  after_kernel_event(e, ev);
  deliver(ev);
}

// Keeps userspace's view of the tracked set in step with the kernel's.
void Tracer::Impl::after_kernel_event(const mltap_event& e, const SystemEvent& ev) {
  if (ev.kind == EventKind::fork && !(e.flags & MLTAP_EF_THREAD) && ev.tracked) {
    std::lock_guard lk(mu);
    Proc p;
    p.start_ticks = ev.other.start_ticks;
    p.component_id = e.component_id;
    p.root_pid = e.root_pid;
    p.root_start_ticks = e.root_start_ticks;
    p.comm = ev.other.comm;
    procs[ev.other.pid] = std::move(p);
  } else if (ev.kind == EventKind::exec && ev.tracked) {
    std::lock_guard lk(mu);
    if (auto it = procs.find(ev.subject.pid); it != procs.end()) it->second.comm = ev.subject.comm;
  } else if (ev.kind == EventKind::exit && !(e.flags & MLTAP_EF_THREAD) && ev.tracked) {
    // The kernel has already forgotten it; read its histograms one last time.
    collect_histograms(ev.subject.pid);
    std::lock_guard lk(mu);
    Proc gone;
    if (auto it = procs.find(ev.subject.pid); it != procs.end()) {
      gone = std::move(it->second);
      procs.erase(it);
    } else {
      gone.start_ticks = ev.subject.start_ticks;
      gone.component_id = e.component_id;
      gone.root_pid = e.root_pid;
      gone.root_start_ticks = e.root_start_ticks;
      gone.comm = ev.subject.comm;
    }
    exited[ev.subject.pid] = Exited{std::move(gone), ev.boot_ns};
  }
}

void Tracer::Impl::deliver(const SystemEvent& ev) {
  {
    std::lock_guard lk(mu);
    ++counts[{ev.tracked ? ev.component : std::string(), ev.kind}];
  }
  if (on_event) {
    try {
      on_event(ev);
    } catch (const std::exception& ex) {
      core::log::error("ebpf: event callback threw: {}", ex.what());
    } catch (...) {
      core::log::error("ebpf: event callback threw");
    }
  }
}

}  // namespace mltap::bpf
