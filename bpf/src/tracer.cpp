// The tracer's lifecycle: loading (loader.cpp), maps and ring buffer, the event thread, teardown;
// and the public methods of bpf::Tracer not about tracking.
#include "bpf/tracer.hpp"

#include <bpf/bpf.h>
#include <linux/capability.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "core/log.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "bpf/src/tracer_impl.hpp"

namespace mltap::bpf {

using core::ProbeStatus;
using core::ProgramStats;
using core::TracerStats;
using plan::err_text;
using plan::map_label;
using plan::prog_label;

namespace {

// Each entry of a per-CPU array of counters, summed over the CPUs.
template <std::size_t N>
void sum_per_cpu(int fd, std::array<std::uint64_t, N>& out) {
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return;
  std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(ncpu));
  for (std::uint32_t i = 0; i < N; ++i) {
    if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) == 0) {
      for (auto v : per_cpu) out[i] += v;
    }
  }
}

}  // namespace

void Tracer::Impl::teardown() noexcept {
  if (rb) ring_buffer__free(rb);
  rb = nullptr;
  teardown_bpf_only();
  if (stop_fd >= 0) ::close(stop_fd);
  if (epoll_fd >= 0) ::close(epoll_fd);
  stop_fd = epoll_fd = -1;
}

// Capability check for later map updates (track/untrack after capabilities are dropped):
// a forked child without any capability tries a lookup on the same fd.
bool Tracer::Impl::probe_map_ops_without_caps() {
  const pid_t child = fork();
  if (child < 0) return false;
  if (child == 0) {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (syscall(SYS_capset, &hdr, data) != 0) _exit(2);
    __u32 key = 1;
    mltap_tracked v{};
    const int r = bpf_map_lookup_elem(tracked_fd, &key, &v);
    _exit(r == 0 || errno == ENOENT ? 0 : 1);
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void Tracer::Impl::setup_maps() {
  if (!skel) return;
  tracked_fd = bpf_map__fd(skel->maps.tracked);
  proc_names_fd = bpf_map__fd(skel->maps.proc_names);
  runq_fd = bpf_map__fd(skel->maps.runq_hist);
  bio_fd = bpf_map__fd(skel->maps.bio_hist);
  bits_words = bpf_map__max_entries(skel->maps.tracked_bits);
  bits_bytes = ((bits_words * 8 + page_size - 1) / page_size) * page_size;
  void* m = mmap(nullptr, bits_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                 bpf_map__fd(skel->maps.tracked_bits), 0);
  if (m == MAP_FAILED) {
    core::log::warn("ebpf: cannot map the tracked-process bitmap: {}", std::strerror(errno));
    bits = nullptr;
  } else {
    bits = static_cast<std::atomic<std::uint64_t>*>(m);
  }
  static_assert(sizeof(std::atomic<std::uint64_t>) == sizeof(std::uint64_t));
  rb = ring_buffer__new(bpf_map__fd(skel->maps.events), &Impl::on_ring_record, this, nullptr);
  if (!rb) {
    const std::string e = "ring buffer: " + err_text(-errno);
    for (std::size_t i = 0; i < kProbeCount; ++i) {
      if (status[i].up && status[i].method != "fanotify") {
        status[i].up = false;
        status[i].reason = e;
      }
    }
    teardown_bpf_only();
    return;
  }
  map_ops_need_cap_bpf = !probe_map_ops_without_caps();
}

// The BPF objects only (the ring buffer could not be set up): the file watch may still run.
void Tracer::Impl::teardown_bpf_only() noexcept {
  for (auto* l : links) bpf_link__destroy(l);
  links.clear();
  attached.clear();
  if (bits) munmap(static_cast<void*>(bits), bits_bytes);
  bits = nullptr;
  skel.reset();
  tracked_fd = proc_names_fd = runq_fd = bio_fd = -1;
}

void Tracer::Impl::log_status_once() {
  std::string up;
  for (const auto& s : status) {
    if (s.up) up += (up.empty() ? "" : ", ") + s.probe + "(" + s.method + ")";
  }
  core::log::info("ebpf: probes up: {}", up.empty() ? "none" : up);
  for (const auto& s : status) {
    if (!s.up && s.by_configuration) core::log::info("ebpf: probe {} is off: {}", s.probe, s.reason);
    else if (!s.up) core::log::warn("ebpf: probe {} is not running: {}", s.probe, s.reason);
    else if (!s.reason.empty()) core::log::info("ebpf: probe {}: {}", s.probe, s.reason);
  }
}

void Tracer::Impl::run() {
  using clk = std::chrono::steady_clock;
  auto last_hist = clk::now();
  auto last_summary = clk::now();
  auto last_gc = clk::now();
  epoll_event evs[4];
  while (!stopping.load(std::memory_order_relaxed)) {
    // The kernel side wakes us only when the ring fills up (wakeup_bytes): poll it anyway.
    const int n = epoll_wait(epoll_fd, evs, 4, 100);
    clock.refresh();
    if (rb) ring_buffer__consume(rb);
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == stop_fd) return;
      if (fd == watch.fd()) {
        const std::uint64_t over = watch.drain([this](const RawFileEvent& r) { on_file_event(r); });
        if (over) {
          std::lock_guard lk(mu);
          fanotify_overflows += over;
        }
      }
    }
    const auto now = clk::now();
    if (now - last_hist >= std::chrono::seconds(1)) {
      last_hist = now;
      collect_histograms();
      retry_pending_dirs();
      prune_exited();
    }
    if (now - last_summary >= cfg.summary_interval) {
      emit_latency_summaries(static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_summary).count()));
      last_summary = now;
    }
    if (now - last_gc >= std::chrono::seconds(5)) {
      last_gc = now;
      garbage_collect();
    }
  }
}

void Tracer::Impl::start_thread() {
  stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (stop_fd < 0 || epoll_fd < 0) throw std::system_error(errno, std::generic_category(), "ebpf: epoll");
  auto add = [&](int fd) {
    if (fd < 0) return;
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = fd;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &e) != 0) {
      throw std::system_error(errno, std::generic_category(), "ebpf: epoll_ctl");
    }
  };
  add(stop_fd);
  if (rb) add(ring_buffer__epoll_fd(rb));
  if (watch.is_open()) add(watch.fd());
  thread = std::thread([this] { run(); });
}

Tracer::Tracer(TracerConfig config, TracerOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options))) {}

Tracer::~Tracer() { stop(); }

const TracerConfig& Tracer::config() const noexcept { return impl_->cfg; }

void Tracer::start(EventCallback on_event) {
  Impl& m = *impl_;
  if (m.started.exchange(true)) throw std::logic_error("bpf::Tracer::start called twice");
  m.on_event = std::move(on_event);
  for (std::size_t i = 0; i < kProbeCount; ++i) {
    const auto p = static_cast<Probe>(i);
    if (!m.cfg.enabled) {
      m.status[i].reason = "eBPF tracing is disabled (ebpf.enabled: false)";
      m.status[i].by_configuration = true;
    } else if (!m.cfg.probe_enabled(p)) {
      m.status[i].by_configuration = true;
      m.status[i].reason = "disabled in the configuration (ebpf.probes." +
                           std::string(probe_name(p)) + ": false)";
    }
  }
  if (m.cfg.enabled) {
    {
      ProbeLoader loader(m.cfg, m.opts, m.status);
      loader.load();
      m.skel = std::move(loader.skel);
      m.links = std::move(loader.links);
      m.attached = std::move(loader.attached);
    }
    m.setup_maps();
    for (std::size_t i = 0; i < kProbeCount; ++i) m.method_used[i] = m.status[i].method;
    m.setup_file_watch();
  }
  m.log_status_once();
  m.start_thread();
}

void Tracer::stop() noexcept {
  Impl& m = *impl_;
  if (!m.started.load()) return;
  if (m.thread.joinable()) {
    m.stopping.store(true);
    const std::uint64_t one = 1;
    if (m.stop_fd >= 0) (void)!::write(m.stop_fd, &one, sizeof(one));
    m.thread.join();
  }
  std::unique_lock life(m.life);
  std::lock_guard lk(m.mu);
  m.teardown();
  for (auto& s : m.status) {
    if (s.up) {
      s.up = false;
      s.reason = "tracer stopped";
    }
  }
}

bool Tracer::watch_directory(const std::string& dir) {
  Impl& m = *impl_;
  std::shared_lock life(m.life);
  if (!m.watch.is_open()) return false;
  std::string err;
  if (!m.watch.add_dir(dir, err)) {
    core::log::warn("ebpf: cannot watch {}: {}", dir, err);
    return false;
  }
  std::lock_guard lk(m.mu);
  m.update_watch_status();
  return true;
}

std::vector<ProbeStatus> Tracer::probe_status() const {
  std::lock_guard lk(impl_->mu);
  return {impl_->status.begin(), impl_->status.end()};
}

TracerStats Tracer::stats() const {
  const Impl& m = *impl_;
  std::shared_lock life(m.life);
  TracerStats s;
  std::array<std::uint64_t, MLTAP_PROG_COUNT> lost{};
  std::array<std::uint64_t, MLTAP_MAP_COUNT> full{};
  if (m.skel) {
    sum_per_cpu(bpf_map__fd(m.skel->maps.lost), lost);
    sum_per_cpu(bpf_map__fd(m.skel->maps.map_full), full);
    if (m.tracked_fd >= 0) s.tracked_processes = map_keys(m.tracked_fd, 1u << 20).size();
  }
  std::lock_guard lk(m.mu);
  s.probes.assign(m.status.begin(), m.status.end());
  for (const auto& [k, n] : m.counts) {
    s.events.push_back({k.first, std::string(core::event_kind_name(k.second)), n});
  }
  for (std::uint32_t i = 0; i < MLTAP_PROG_COUNT; ++i) s.lost_by_program[std::string(prog_label(i))] = lost[i];
  s.lost_by_program["file_watch"] = m.fanotify_overflows;
  s.lost_by_program["userspace"] = m.userspace_lost;
  s.file_actors = {{"proc", m.actors_from_proc},
                   {"proc_names", m.actors_named_by_kernel},
                   {"unknown", m.actors_unnamed}};
  for (std::uint32_t i = 0; i < MLTAP_MAP_COUNT; ++i) s.map_full[std::string(map_label(i))] = full[i];
  s.runqueue_by_component = m.runq.by_component;
  s.block_io_by_component = m.bio.by_component;
  if (!m.skel) {
    s.tracked_processes = m.procs.size();
  }
  return s;
}

std::vector<ProgramStats> Tracer::program_stats() const {
  std::vector<ProgramStats> out;
  std::shared_lock life(impl_->life);
  std::lock_guard lk(impl_->mu);
  for (const auto& a : impl_->attached) {
    bpf_prog_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(a.fd, &info, &len) != 0) continue;
    out.push_back({a.name, a.probe, info.run_cnt, info.run_time_ns});
  }
  return out;
}

std::vector<std::string> Tracer::capabilities_needed_after_start() const {
  std::shared_lock life(impl_->life);
  if (impl_->skel && impl_->map_ops_need_cap_bpf) return {"CAP_BPF"};
  return {};
}

}  // namespace mltap::bpf
