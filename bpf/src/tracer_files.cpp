// Model files: the fanotify watch of their directories (and the directories not watchable yet),
// file events from it, and which (tracked) process did it.
#include <bpf/bpf.h>
#include <fnmatch.h>

#include <cstring>

#include "core/log.hpp"

#include "bpf/src/proc.hpp"
#include "bpf/src/tracer_impl.hpp"

namespace mltap::bpf {

using core::EventKind;
using core::FileOp;
using core::SystemEvent;

void Tracer::Impl::setup_file_watch() {
  if (!cfg.probe_enabled(Probe::file_watch)) return;
  auto& s = st(Probe::file_watch);
  std::string err;
  if (!watch.open(err)) {
    s.up = false;
    s.reason = err;
    return;
  }
  for (const auto& d : cfg.files.watch_dirs) {
    if (!watch.add_dir(d, err)) {
      pending_dirs.push_back(d);
      watch_note = err;
    }
  }
  update_watch_status();
}

void Tracer::Impl::update_watch_status() {
  auto& s = st(Probe::file_watch);
  if (!watch.is_open()) return;
  s.up = watch.dir_count() > 0;
  s.method = s.up ? "fanotify" : "";
  std::string note;
  s.by_configuration = false;
  if (cfg.files.watch_dirs.empty() && watch.dir_count() == 0) {
    note = "no directories to watch yet (ebpf.files.watch_dirs is empty and no producer declared artifacts)";
    s.by_configuration = true;
  } else if (!pending_dirs.empty()) {
    note = std::to_string(pending_dirs.size()) + " of the directories cannot be watched yet (" +
           watch_note + "); retried every second";
  }
  if (!watch.privileged()) {
    note += std::string(note.empty() ? "" : "; ") +
            "started without CAP_SYS_ADMIN: writers' pids are hidden";
  }
  if (!watch.rename_events()) note += std::string(note.empty() ? "" : "; ") + "no FAN_RENAME (kernel < 5.17): renames seen as move halves";
  s.reason = note;
}

void Tracer::Impl::retry_pending_dirs() {
  if (pending_dirs.empty() || !watch.is_open()) return;
  std::vector<std::string> still;
  std::string err;
  for (const auto& d : pending_dirs) {
    if (!watch.add_dir(d, err)) {
      still.push_back(d);
      watch_note = err;
    } else {
      core::log::info("ebpf: now watching {}", d);
    }
  }
  if (still.size() != pending_dirs.size()) {
    pending_dirs = std::move(still);
    std::lock_guard lk(mu);
    update_watch_status();
  }
}

bool Tracer::Impl::name_matches(const std::string& name) const {
  if (name.empty()) return false;
  for (const auto& p : cfg.files.patterns) {
    if (fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
  }
  return false;
}

// Resolves a path a process passed to a system call (relative to its cwd or a dir fd).
std::string Tracer::Impl::resolve(std::uint32_t pid, std::int32_t dfd, const std::string& p) const {
  if (p.empty() || p[0] == '/') return p;
  std::optional<std::string> base;
  if (dfd == -100 /* AT_FDCWD */) base = proc::read_link(opts.proc_root, pid, "cwd");
  else if (dfd >= 0) base = proc::read_link(opts.proc_root, pid, "fd/" + std::to_string(dfd));
  return base ? join_path(*base, p) : p;
}

void Tracer::Impl::on_file_event(const RawFileEvent& r) {
  SystemEvent ev;
  ev.kind = EventKind::file_change;
  ev.source = "fanotify";
  ev.boot_ns = WallClock::boot_now_ns();  // fanotify has no timestamp: time of reading
  ev.unix_ns = clock.to_unix_ns(ev.boot_ns);
  if (r.mask & FAN_RENAME_MASK) {
    const bool new_match = name_matches(r.new_name);
    const bool old_match = name_matches(r.name);
    const std::string oldp = join_path(r.dir.empty() ? "(unwatched)" : r.dir, r.name);
    const std::string newp = join_path(r.new_dir.empty() ? "(unwatched)" : r.new_dir, r.new_name);
    if (new_match && !r.new_dir.empty()) {
      ev.file_op = FileOp::renamed_onto;
      ev.path = newp;
      ev.old_path = oldp;
    } else if (old_match && !r.dir.empty()) {
      ev.file_op = FileOp::renamed_away;
      ev.path = oldp;
      ev.old_path = newp;
    } else {
      return;
    }
  } else {
    if (!name_matches(r.name) || r.dir.empty()) return;
    ev.path = join_path(r.dir, r.name);
    if (r.mask & FAN_CLOSE_WRITE_MASK) ev.file_op = FileOp::written;
    else if (r.mask & FAN_DELETE_MASK) ev.file_op = FileOp::deleted;
    else if (r.mask & FAN_MOVED_TO_MASK) ev.file_op = FileOp::renamed_onto;
    else if (r.mask & FAN_MOVED_FROM_MASK) ev.file_op = FileOp::renamed_away;
    else return;
  }
  if (r.pid != 0 && r.pid == static_cast<std::uint32_t>(getpid())) return;  // our own doing
  ev.subject.pid = r.pid;
  ev.subject.tid = r.pid;
  attribute_actor(ev);
  if (!ev.tracked && !cfg.files.report_untracked_actors) return;
  deliver(ev);
}

// Is the actor tracked (in the kernel's set, or userspace's when BPF is off)?
void Tracer::Impl::attribute_actor(SystemEvent& ev) {
  const std::uint32_t pid = ev.subject.pid;
  if (pid == 0) return;
  std::optional<mltap_tracked> kv;
  if (tracked_fd >= 0) {
    mltap_tracked v{};
    if (bpf_map_lookup_elem(tracked_fd, &pid, &v) == 0) kv = v;
  }
  const auto alive = naming::read_proc_stat(pid, opts.proc_root);
  std::lock_guard lk(mu);
  auto adopt = [&](const Proc& p) {
    ev.tracked = true;
    ev.subject.start_ticks = p.start_ticks;
    ev.subject.comm = p.comm;
    ev.component = component_name(p.component_id);
    ev.root.pid = p.root_pid;
    ev.root.start_ticks = p.root_start_ticks;
  };
  if (kv) {
    Proc p;
    p.start_ticks = kv->start_ticks;
    p.component_id = kv->component_id;
    p.root_pid = kv->root_pid;
    p.root_start_ticks = kv->root_start_ticks;
    adopt(p);
  } else if (auto it = procs.find(pid); it != procs.end()) {
    adopt(it->second);
  } else if (auto x = exited.find(pid); x != exited.end()) {
    // Exited since; unless the pid already belongs to another process.
    if (!alive || alive->start_ticks == x->second.proc.start_ticks) adopt(x->second.proc);
  }
  if (auto it = procs.find(ev.root.pid); ev.tracked && it != procs.end()) {
    ev.root.comm = it->second.comm;
  }
  if (alive && (ev.subject.start_ticks == 0 || ev.subject.start_ticks == alive->start_ticks)) {
    ev.subject.start_ticks = alive->start_ticks;
    ev.subject.comm = alive->comm;
    ++actors_from_proc;
    return;
  }
  mltap_proc_name n{};
  if (!alive && ev.subject.comm.empty() && proc_names_fd >= 0 &&
      bpf_map_lookup_elem(proc_names_fd, &pid, &n) == 0 &&
      (ev.subject.start_ticks == 0 || ev.subject.start_ticks == n.start_ticks)) {
    // Gone before its event was read (a `cp` or a script replacing the model): its name as the
    // kernel saw it at its fork or last exec (the last process under this pid).
    ev.subject.start_ticks = n.start_ticks;
    ev.subject.comm.assign(n.comm, strnlen(n.comm, sizeof n.comm));
    ++actors_named_by_kernel;
  } else if (ev.subject.comm.empty()) {
    ++actors_unnamed;
  }
}

void Tracer::Impl::prune_exited() {
  const std::uint64_t now = WallClock::boot_now_ns();
  std::lock_guard lk(mu);
  for (auto it = exited.begin(); it != exited.end();) {
    if (now - it->second.boot_ns > 60'000'000'000ULL) it = exited.erase(it);
    else ++it;
  }
}

}  // namespace mltap::bpf
