// The tracked processes: the kernel's set (map `tracked` and its bitmap) and userspace's view of
// it (procs), components, and the descendants of a newly tracked process.
#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>

#include "bpf/src/proc.hpp"
#include "bpf/src/tracer_impl.hpp"

namespace mltap::bpf {

std::vector<std::uint32_t> map_keys(int fd, std::size_t limit) {
  std::vector<std::uint32_t> keys;
  std::uint32_t key = 0, next = 0;
  const std::uint32_t* prev = nullptr;
  while (keys.size() < limit && bpf_map_get_next_key(fd, prev, &next) == 0) {
    keys.push_back(next);
    key = next;
    prev = &key;
  }
  return keys;
}

void Tracer::Impl::set_bit(std::uint32_t pid, bool on) {
  if (!bits) return;
  const std::size_t w = pid >> 6;
  if (w >= bits_words) return;
  const std::uint64_t m = std::uint64_t{1} << (pid & 63);
  if (on) bits[w].fetch_or(m, std::memory_order_relaxed);
  else bits[w].fetch_and(~m, std::memory_order_relaxed);
}

std::string Tracer::Impl::component_name(std::uint32_t id) const {
  if (id == 0 || id > component_names.size()) return {};
  return component_names[id - 1];
}

std::optional<std::uint32_t> Tracer::Impl::component_id(std::string_view name) {
  if (name.empty()) return 0;
  auto it = component_ids.find(std::string(name));
  if (it != component_ids.end()) return it->second;
  if (component_names.size() >= kMaxComponents) return std::nullopt;
  component_names.emplace_back(name);
  const auto id = static_cast<std::uint32_t>(component_names.size());
  component_ids.emplace(std::string(name), id);
  return id;
}

// Drops kernel entries of processes that died without an exit event reaching us (ring full,
// exit probe off) and fills in start times the kernel could not know.
void Tracer::Impl::garbage_collect() {
  if (tracked_fd < 0) return;
  for (std::uint32_t pid : map_keys(tracked_fd, cfg.max_tracked_processes * 2u)) {
    mltap_tracked v{};
    if (bpf_map_lookup_elem(tracked_fd, &pid, &v) != 0) continue;
    auto s = naming::read_proc_stat(pid, opts.proc_root);
    const bool dead = !s || s->state == 'Z' || s->state == 'X' ||
                      (v.start_ticks != 0 && s->start_ticks != v.start_ticks);
    if (dead) {
      bpf_map_delete_elem(tracked_fd, &pid);
      set_bit(pid, false);
      collect_histograms(pid);
      std::lock_guard lk(mu);
      procs.erase(pid);
    } else if (v.start_ticks == 0) {
      v.start_ticks = s->start_ticks;
      bpf_map_update_elem(tracked_fd, &pid, &v, BPF_EXIST);
    }
  }
}

// Descendants alive now (their children from now on are added in the kernel).
std::vector<std::pair<std::uint32_t, std::uint64_t>> Tracer::Impl::descendants(std::uint32_t root) const {
  std::unordered_map<std::uint32_t, std::vector<const proc::ProcEntry*>> kids;
  const auto all = proc::list_processes(opts.proc_root);
  for (const auto& e : all) kids[e.stat.ppid].push_back(&e);
  std::vector<std::pair<std::uint32_t, std::uint64_t>> out;
  std::vector<std::uint32_t> todo{root};
  while (!todo.empty() && out.size() < 4096) {
    const std::uint32_t p = todo.back();
    todo.pop_back();
    for (const auto* c : kids[p]) {
      out.emplace_back(c->pid, c->stat.start_ticks);
      todo.push_back(c->pid);
    }
  }
  return out;
}

TrackResult Tracer::track(std::uint32_t pid, std::uint64_t start_ticks, std::string_view component) {
  Impl& m = *impl_;
  std::shared_lock life(m.life);
  if (pid == 0 || start_ticks == 0 || pid == static_cast<std::uint32_t>(getpid())) {
    return TrackResult::invalid;
  }
  const auto st = naming::read_proc_stat(pid, m.opts.proc_root);
  if (!st || st->start_ticks != start_ticks || st->state == 'Z' || st->state == 'X') {
    return TrackResult::no_such_process;
  }
  std::uint32_t comp = 0;
  bool already = false;
  {
    std::lock_guard lk(m.mu);
    auto id = m.component_id(component);
    if (!id) return TrackResult::table_full;
    comp = *id;
    auto it = m.procs.find(pid);
    already = it != m.procs.end() && it->second.start_ticks == start_ticks && it->second.explicit_;
    Impl::Proc p;
    p.start_ticks = start_ticks;
    p.component_id = comp;
    p.root_pid = pid;
    p.root_start_ticks = start_ticks;
    p.explicit_ = true;
    p.comm = st->comm;
    m.procs[pid] = std::move(p);
  }
  if (m.tracked_fd < 0) return TrackResult::userspace_only;
  // The kernel's entry of a process of this tree: its own start time, the tree's root.
  auto entry = [&](std::uint64_t ticks, std::uint32_t flags) {
    mltap_tracked v{};
    v.start_ticks = ticks;
    v.root_pid = pid;
    v.root_start_ticks = start_ticks;
    v.component_id = comp;
    v.flags = flags;
    return v;
  };
  const mltap_tracked v = entry(start_ticks, MLTAP_TF_EXPLICIT);
  if (bpf_map_update_elem(m.tracked_fd, &pid, &v, BPF_ANY) != 0) {
    std::lock_guard lk(m.mu);
    m.procs.erase(pid);
    return (errno == E2BIG || errno == ENOMEM) ? TrackResult::table_full
                                               : TrackResult::no_such_process;
  }
  m.set_bit(pid, true);
  // Children alive now: tracked as if the kernel had seen them start.
  for (const auto& [cpid, cticks] : m.descendants(pid)) {
    const mltap_tracked c = entry(cticks, MLTAP_TF_INHERITED);
    if (bpf_map_update_elem(m.tracked_fd, &cpid, &c, BPF_NOEXIST) == 0) {
      m.set_bit(cpid, true);
      std::lock_guard lk(m.mu);
      Impl::Proc p;
      p.start_ticks = cticks;
      p.component_id = comp;
      p.root_pid = pid;
      p.root_start_ticks = start_ticks;
      m.procs.emplace(cpid, std::move(p));
    }
  }
  return already ? TrackResult::already_tracked : TrackResult::tracked;
}

bool Tracer::untrack(std::uint32_t pid, std::uint64_t start_ticks) {
  Impl& m = *impl_;
  std::shared_lock life(m.life);
  bool found = false;
  std::vector<std::uint32_t> gone;
  {
    std::lock_guard lk(m.mu);
    auto it = m.procs.find(pid);
    if (it != m.procs.end() && it->second.start_ticks == start_ticks) {
      found = true;
      for (const auto& [p, info] : m.procs) {
        if (info.root_pid == pid && info.root_start_ticks == start_ticks) gone.push_back(p);
      }
    }
  }
  if (m.tracked_fd >= 0) {
    // The kernel may know children userspace has not heard of yet.
    for (std::uint32_t k : map_keys(m.tracked_fd, 1u << 20)) {
      mltap_tracked v{};
      if (bpf_map_lookup_elem(m.tracked_fd, &k, &v) != 0) continue;
      if (v.root_pid == pid && v.root_start_ticks == start_ticks) {
        found = true;
        gone.push_back(k);
      }
    }
  }
  std::sort(gone.begin(), gone.end());
  gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
  for (std::uint32_t p : gone) {
    if (m.tracked_fd >= 0) {
      bpf_map_delete_elem(m.tracked_fd, &p);
      m.set_bit(p, false);
      m.collect_histograms(p);
    }
    std::lock_guard lk(m.mu);
    m.procs.erase(p);
  }
  return found;
}

}  // namespace mltap::bpf
