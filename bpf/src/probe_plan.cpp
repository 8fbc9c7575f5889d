// The probe table (which BPF programs make up which probe, in which variants) and the
// kernel's offer (capabilities, BTF, ring buffer, tracepoints, tracefs).
#include "bpf/src/probe_plan.hpp"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.hpp"

#include <cerrno>
#include <cstdarg>
#include <cstring>

#include "bpf/mltap_events.h"
#include "bpf/src/proc.hpp"

namespace mltap::bpf::plan {

namespace {
constexpr int kCapSysAdmin = 21;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;
}  // namespace

LibbpfLog& LibbpfLog::get() {
  static LibbpfLog log;
  return log;
}

// ---- libbpf messages: kept so that a failed load or attach can say why ----

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  const int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  if (n <= 0) return 0;
  LibbpfLog::get().add(buf);
  core::log::debug("libbpf: {}", buf);
  return 0;
}

std::string err_text(int err) {
  char buf[128];
  libbpf_strerror(err < 0 ? err : -err, buf, sizeof(buf));
  return buf;
}

// ---- which BPF programs make up which probe ----

const std::vector<Group>& groups() {
  constexpr int retr = static_cast<int>(Probe::tcp_retransmit);
  static const std::vector<Group> g = {
      {"exec", {Probe::exec},
       {{Method::tp_btf, {{"exec_btf", "sched/sched_process_exec"}}},
        {Method::raw_tp, {{"exec_raw", "sched/sched_process_exec"}}},
        {Method::tracefs, {{"exec_tp", "sched/sched_process_exec"}}}}},
      {"fork", {Probe::fork},
       {{Method::tp_btf, {{"fork_btf", "sched/sched_process_fork"}}},
        {Method::raw_tp, {{"fork_raw", "sched/sched_process_fork"}}},
        {Method::tracefs, {{"fork_tp", "sched/sched_process_fork"}}}}},
      {"exit", {Probe::exit},
       {{Method::tp_btf, {{"exit_btf", "sched/sched_process_exit"}}},
        {Method::raw_tp, {{"exit_raw", "sched/sched_process_exit"}}},
        {Method::tracefs, {{"exit_tp", "sched/sched_process_exit"}}}}},
      {"signal", {Probe::signal},
       {{Method::tp_btf, {{"signal_btf", "signal/signal_generate"}}},
        {Method::raw_tp, {{"signal_raw", "signal/signal_generate"}}},
        {Method::tracefs, {{"signal_tp", "signal/signal_generate"}}}}},
      {"oom_kill", {Probe::oom_kill},
       {{Method::tp_btf, {{"oom_btf", "oom/mark_victim"}}},
        {Method::raw_tp, {{"oom_raw", "oom/mark_victim"}}},
        {Method::tracefs, {{"oom_tp", "oom/mark_victim"}}}}},
      {"runqueue", {Probe::runqueue},
       {{Method::tp_btf, {{"switch_si_btf", "sched/sched_switch"}}, true},
        {Method::tp_btf,
         {{"wakeup_btf", "sched/sched_wakeup"},
          {"wakeup_new_btf", "sched/sched_wakeup_new"},
          {"switch_btf", "sched/sched_switch"}}},
        {Method::raw_tp,
         {{"wakeup_raw", "sched/sched_wakeup"},
          {"wakeup_new_raw", "sched/sched_wakeup_new"},
          {"switch_raw", "sched/sched_switch"}}}}},
      {"block_io", {Probe::block_io},
       {{Method::tp_btf,
         {{"bio_start_btf", "block/block_io_start"}, {"bio_done_btf", "block/block_io_done"}}},
        {Method::tp_btf,
         {{"bio_insert_btf", "block/block_rq_insert"},
          {"bio_complete_btf", "block/block_rq_complete"}}},
        {Method::raw_tp,
         {{"bio_start_raw", "block/block_io_start"}, {"bio_done_raw", "block/block_io_done"}}}}},
      {"tcp", {Probe::tcp_retransmit, Probe::tcp_connect},
       {{Method::tp_btf,
         {{"state_btf", "sock/inet_sock_set_state"},
          {"sendmsg_btf", "tcp/tcp_sendmsg_locked", retr},
          {"retransmit_btf", "tcp/tcp_retransmit_skb", retr}}},
        {Method::raw_tp,
         {{"state_raw", "sock/inet_sock_set_state"},
          {"sendmsg_raw", "tcp/tcp_sendmsg_locked", retr},
          {"retransmit_raw", "tcp/tcp_retransmit_skb", retr}}}}},
      {"file_syscalls", {Probe::file_syscalls},
       {{Method::tp_btf,
         {{"sys_enter_btf", "raw_syscalls/sys_enter"}, {"sys_exit_btf", "raw_syscalls/sys_exit"}}},
        {Method::raw_tp,
         {{"sys_enter_raw", "raw_syscalls/sys_enter"}, {"sys_exit_raw", "raw_syscalls/sys_exit"}}},
        {Method::tracefs,
         {{"sys_enter_tp", "raw_syscalls/sys_enter"},
          {"sys_exit_tp", "raw_syscalls/sys_exit"}}}}},
  };
  return g;
}

std::string_view event_name_of(const char* tracepoint) {
  std::string_view tp(tracepoint);
  const auto slash = tp.find('/');
  return slash == std::string_view::npos ? tp : tp.substr(slash + 1);
}

std::string_view prog_label(std::uint32_t prog) {
  switch (prog) {
    case MLTAP_PROG_EXEC: return "exec";
    case MLTAP_PROG_FORK: return "fork";
    case MLTAP_PROG_EXIT: return "exit";
    case MLTAP_PROG_SIGNAL: return "signal";
    case MLTAP_PROG_OOM_KILL: return "oom_kill";
    case MLTAP_PROG_TCP_RETRANSMIT: return "tcp_retransmit";
    case MLTAP_PROG_TCP_CONNECT: return "tcp_connect";
    case MLTAP_PROG_FILE_SYSCALLS: return "file_syscalls";
  }
  return "unknown";
}

std::string_view map_label(std::uint32_t id) {
  switch (id) {
    case MLTAP_MAP_TRACKED: return "tracked";
    case MLTAP_MAP_RUNQ_HIST: return "runqueue_histograms";
    case MLTAP_MAP_BIO_HIST: return "block_io_histograms";
    case MLTAP_MAP_SOCKETS: return "sockets";
    case MLTAP_MAP_FILE_STASH: return "file_stash";
    case MLTAP_MAP_PROC_NAMES: return "proc_names";
  }
  return "unknown";
}

// ---- what the kernel offers ----

std::optional<std::uint64_t> cap_eff() { return proc::read_cap_mask("/proc/self/status", "CapEff"); }

bool has_cap(std::uint64_t mask, int cap) { return (mask >> cap) & 1; }

std::string cap_blocker() {
  const auto eff = cap_eff();
  if (!eff) return "cannot read capabilities from /proc/self/status";
  if (has_cap(*eff, kCapSysAdmin)) return {};
  if (has_cap(*eff, kCapBpf) && has_cap(*eff, kCapPerfmon)) return {};
  std::string missing;
  if (!has_cap(*eff, kCapBpf)) missing += "CAP_BPF";
  if (!has_cap(*eff, kCapPerfmon)) missing += missing.empty() ? "CAP_PERFMON" : " and CAP_PERFMON";
  return "missing " + missing + " (tracing programs need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)";
}

KernelFeatures probe_kernel(const TracerConfig& cfg) {
  KernelFeatures f;
  const auto eff = cap_eff();
  f.has_sys_admin = eff && has_cap(*eff, kCapSysAdmin);
  if (auto c = cap_blocker(); !c.empty()) {
    f.bpf_blocker = c;
    return f;
  }
  const std::string btf_file = cfg.btf_path.empty() ? "/sys/kernel/btf/vmlinux" : cfg.btf_path;
  if (::access(btf_file.c_str(), R_OK) != 0) {
    f.bpf_blocker = "no kernel BTF (" + btf_file + ": " + std::strerror(errno) +
                    "): CO-RE programs cannot be relocated; set ebpf.btf_path to this kernel's BTF";
    return f;
  }
  if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr) != 1) {
    f.bpf_blocker = "kernel has no BPF ring buffer (needs Linux >= 5.8)";
    return f;
  }
  btf* b = btf__parse(btf_file.c_str(), nullptr);
  if (!b) {
    f.bpf_blocker = "cannot parse BTF " + btf_file + ": " + err_text(-errno);
    return f;
  }
  const __u32 n = btf__type_cnt(b);
  for (__u32 id = 1; id < n; ++id) {
    const btf_type* t = btf__type_by_id(b, id);
    if (!t || btf_kind(t) != BTF_KIND_TYPEDEF) continue;
    const char* name = btf__name_by_offset(b, t->name_off);
    if (name && std::strncmp(name, "btf_trace_", 10) == 0) f.btf_tracepoints.insert(name + 10);
  }
  btf__free(b);
  return f;
}

bool tracefs_mounted(const std::string& root) {
  struct stat st {};
  return ::stat((root + "/events").c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Mounts tracefs when a tracefs probe needs it. Records why not, once.
void ensure_tracefs(KernelFeatures& f, const TracerConfig& cfg, const std::string& root) {
  if (f.tracefs_checked) return;
  f.tracefs_checked = true;
  if (tracefs_mounted(root)) {
    f.tracefs_ok = true;
    return;
  }
  if (!cfg.mount_tracefs) {
    f.tracefs_note = "tracefs is not mounted at " + root + " and ebpf.mount_tracefs is false";
    return;
  }
  if (::mount("nodev", root.c_str(), "tracefs", 0, nullptr) != 0) {
    f.tracefs_note = "tracefs is not mounted at " + root + " and mounting it failed: " +
                     std::strerror(errno) + (errno == EPERM ? " (needs CAP_SYS_ADMIN)" : "");
    return;
  }
  core::log::info("ebpf: mounted tracefs at {} for tracefs tracepoints", root);
  f.tracefs_ok = tracefs_mounted(root);
  if (!f.tracefs_ok) f.tracefs_note = "tracefs mounted at " + root + " but has no events/";
}

bool method_allowed(AttachMode mode, Method m) {
  switch (mode) {
    case AttachMode::automatic: return true;
    case AttachMode::tp_btf: return m == Method::tp_btf;
    case AttachMode::raw_tp: return m == Method::raw_tp;
    case AttachMode::tracefs: return m == Method::tracefs;
  }
  return false;
}

SuffixPlan suffix_plan(const std::vector<std::string>& patterns) {
  SuffixPlan p;
  for (const auto& pat : patterns) {
    const bool pure = pat.size() > 1 && pat[0] == '*' &&
                      pat.find_first_of("*?[\\", 1) == std::string::npos &&
                      pat.size() - 1 <= MLTAP_SUFFIX_LEN;
    if (!pure) {
      p.match_all = true;
      continue;
    }
    p.suffixes.push_back(pat.substr(1));
  }
  if (p.suffixes.size() > MLTAP_MAX_SUFFIXES) p.match_all = true;
  return p;
}

}  // namespace mltap::bpf::plan
