// mltap_ebpf_overhead: what mltap's probes cost the processes on the host, side by side in one
// run. Syscall-heavy loops (open/close, fork+exec, pipe ping-pong) run in a tracked and in an
// untracked process, without probes (baseline), with mltap's default probes, with mltap's
// optional syscall probe (file_syscalls), and with Debian's libbpf-tools doing similar work
// (opensnoop filtered to another pid: syscall tracepoints; runqlat: scheduler tracepoints).
// Rounds interleave the configurations; medians over rounds and ratios to the baseline of the
// same run are printed. A second pass reads per-program run time from the kernel's BPF
// statistics (BPF_ENABLE_STATS, the same counters as sysctl kernel.bpf_stats_enabled=1).
//
//   mltap_ebpf_overhead [--rounds N] [--open N] [--fork N] [--pipe N] [--json FILE]
//                       [--no-peers] [--libbpf-tools DIR] [--attach auto|tp_btf|raw_tp|tracefs]
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <functional>
#include <random>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bpf/tracer.hpp"
#include "floor.skel.h"
#include "mltap/naming.hpp"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using mltap::bpf::Probe;
using mltap::bpf::Tracer;
using mltap::bpf::TracerConfig;

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

// ---------------- workloads (run in a child process: `self workload KIND N`) ----------------

double open_close(long n) {
  const std::uint64_t t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    const int fd = open("/etc/hostname", O_RDONLY);
    if (fd >= 0) close(fd);
  }
  return static_cast<double>(now_ns() - t0) / static_cast<double>(n);
}

double fork_exec(long n) {
  const std::uint64_t t0 = now_ns();
  char arg0[] = "/bin/true";
  char* argv[] = {arg0, nullptr};
  for (long i = 0; i < n; ++i) {
    pid_t p;
    if (posix_spawn(&p, "/bin/true", nullptr, nullptr, argv, environ) == 0) waitpid(p, nullptr, 0);
  }
  return static_cast<double>(now_ns() - t0) / static_cast<double>(n);
}

double pipe_pingpong(long n) {
  int a[2], b[2];
  if (pipe(a) != 0 || pipe(b) != 0) return -1;
  const pid_t echo = fork();
  if (echo == 0) {
    close(a[1]);
    close(b[0]);
    char c;
    while (read(a[0], &c, 1) == 1) {
      if (write(b[1], &c, 1) != 1) break;
    }
    _exit(0);
  }
  close(a[0]);
  close(b[1]);
  char c = 'x';
  const std::uint64_t t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) break;
  }
  const double r = static_cast<double>(now_ns() - t0) / static_cast<double>(n);
  close(a[1]);
  waitpid(echo, nullptr, 0);
  return r;
}

// Writes and closes a model-named file in `dir`: what a fanotify watch on `dir` costs writers.
double write_close(long n, const std::string& dir) {
  const std::string path = dir + "/bench-model.bin";
  const char data[64] = {};
  const std::uint64_t t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    // No O_TRUNC: on ext4 mounted with `discard` every truncate waits for a discard.
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT, 0644);
    if (fd < 0) return -1;
    if (pwrite(fd, data, sizeof(data), 0) != static_cast<ssize_t>(sizeof(data))) return -1;
    close(fd);
  }
  return static_cast<double>(now_ns() - t0) / static_cast<double>(n);
}

std::string g_dir;  // where write_close writes (watched in the file-watch scenario)

// CPU time of this process and its waited-for children (the echo process, /bin/true): unlike
// wall time it does not count waiting for a CPU, so it holds up on a loaded machine. It does
// include the BPF programs that ran in these processes' context.
double cpu_ns() {
  double t = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage ru{};
    getrusage(who, &ru);
    t += (static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_stime.tv_sec)) * 1e9 +
         (static_cast<double>(ru.ru_utime.tv_usec) + static_cast<double>(ru.ru_stime.tv_usec)) * 1e3;
  }
  return t;
}

int workload_main(const std::string& kind, long n) {
  (void)!write(3, "r", 1);  // ready: exec done
  close(3);
  char buf[8];
  (void)!read(0, buf, sizeof(buf));  // wait for "go" (tracked by then, or not)
  const double cpu0 = cpu_ns();
  double r = -1;
  if (kind == "open_close") r = open_close(n);
  else if (kind == "fork_exec") r = fork_exec(n);
  else if (kind == "pipe_pingpong") r = pipe_pingpong(n);
  else if (kind == "write_close") r = write_close(n, g_dir);
  const double cpu = (cpu_ns() - cpu0) / static_cast<double>(n);
  std::printf("%.3f %.3f\n", r, cpu);
  return r < 0 ? 1 : 0;
}

// ---------------- driver ----------------

std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

std::uint64_t start_ticks_of(pid_t pid) {
  return mltap::naming::process_start_ticks(static_cast<std::uint32_t>(pid)).value_or(0);
}

struct Sample {
  double wall = -1;  // ns per op
  double cpu = -1;   // CPU ns per op (process + children)
};

// Runs one workload in a fresh process; tracked by `tracer` if given.
Sample run_workload(const std::string& kind, long n, Tracer* tracer) {
  int go[2], ready[2], out[2];
  if (pipe2(go, O_CLOEXEC) || pipe2(ready, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) return {};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, go[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, ready[1], 3);
  const std::string exe = self_exe();
  std::string a1 = "workload", a2 = kind, a3 = std::to_string(n), a4 = g_dir;
  char* argv[] = {const_cast<char*>(exe.c_str()), a1.data(), a2.data(), a3.data(), a4.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(go[0]);
  close(out[1]);
  close(ready[1]);
  if (rc != 0) return {};
  char b;
  pollfd pf{ready[0], POLLIN, 0};
  if (poll(&pf, 1, 10000) == 1) (void)!read(ready[0], &b, 1);
  close(ready[0]);
  if (tracer) {
    const auto r = tracer->track(static_cast<std::uint32_t>(pid), start_ticks_of(pid), "bench");
    if (r != mltap::bpf::TrackResult::tracked) {
      std::fprintf(stderr, "track failed: %s\n", std::string(mltap::bpf::track_result_name(r)).c_str());
    }
  }
  (void)!write(go[1], "go\n", 3);
  close(go[1]);
  std::string text;
  char buf[256];
  ssize_t k;
  while ((k = read(out[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<std::size_t>(k));
  close(out[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  Sample smp;
  if (std::sscanf(text.c_str(), "%lf %lf", &smp.wall, &smp.cpu) != 2) return {};
  return smp;
}

// An external peer (libbpf-tools) running for the duration of a scenario.
class Peer {
 public:
  Peer(const std::string& path, std::vector<std::string> args) {
    std::vector<char*> argv;
    args.insert(args.begin(), path);
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    const auto before = prog_ids();
    if (posix_spawn(&pid_, path.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    // Attached once its programs appear and stop changing.
    std::size_t last = 0;
    for (int i = 0; i < 100 && pid_ > 0; ++i) {
      std::this_thread::sleep_for(50ms);
      auto now = prog_ids();
      std::set<std::uint32_t> fresh;
      for (auto id : now) {
        if (!before.count(id)) fresh.insert(id);
      }
      if (!fresh.empty() && fresh.size() == last && i > 4) {
        progs_ = fresh;
        break;
      }
      last = fresh.size();
    }
  }
  ~Peer() {
    if (pid_ > 0) {
      kill(pid_, SIGINT);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool ok() const { return pid_ > 0 && !progs_.empty(); }
  const std::set<std::uint32_t>& progs() const { return progs_; }

  static std::set<std::uint32_t> prog_ids() {
    std::set<std::uint32_t> ids;
    std::uint32_t id = 0;
    while (bpf_prog_get_next_id(id, &id) == 0) ids.insert(id);
    return ids;
  }

 private:
  pid_t pid_ = -1;
  std::set<std::uint32_t> progs_;
};

struct ProgRun {
  std::string name;
  std::uint64_t cnt = 0;
  std::uint64_t ns = 0;
};

ProgRun prog_run(std::uint32_t id) {
  ProgRun r;
  const int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return r;
  bpf_prog_info info{};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
    r.name = info.name;
    r.cnt = info.run_cnt;
    r.ns = info.run_time_ns;
  }
  close(fd);
  return r;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

mltap::bpf::AttachMode g_attach = mltap::bpf::AttachMode::automatic;

TracerConfig mltap_config(bool syscalls, bool watch = false) {
  TracerConfig c;
  c.attach_mode = g_attach;
  c.probes[static_cast<std::size_t>(Probe::file_watch)] = watch;
  c.probes[static_cast<std::size_t>(Probe::file_syscalls)] = syscalls;
  if (watch) c.files.watch_dirs = {g_dir};
  return c;
}

struct Args {
  int rounds = 5;
  long open_n = 200000;
  long fork_n = 400;
  long pipe_n = 100000;
  long write_n = 100000;
  bool peers = true;
  std::string tools = "/usr/sbin";
  std::string json_out;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "workload") {
    g_dir = argv[4];
    return workload_main(argv[2], std::atol(argv[3]));
  }
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--rounds") a.rounds = std::max(1, std::atoi(next().c_str()));
    else if (k == "--open") a.open_n = std::max(1L, std::atol(next().c_str()));
    else if (k == "--fork") a.fork_n = std::max(1L, std::atol(next().c_str()));
    else if (k == "--pipe") a.pipe_n = std::max(1L, std::atol(next().c_str()));
    else if (k == "--write") a.write_n = std::max(1L, std::atol(next().c_str()));
    else if (k == "--json") a.json_out = next();
    else if (k == "--no-peers") a.peers = false;
    else if (k == "--attach") {
      const std::string m = next();
      if (m == "tp_btf") g_attach = mltap::bpf::AttachMode::tp_btf;
      else if (m == "raw_tp") g_attach = mltap::bpf::AttachMode::raw_tp;
      else if (m == "tracefs") g_attach = mltap::bpf::AttachMode::tracefs;
      else if (m != "auto") {
        std::cerr << "--attach: auto, tp_btf, raw_tp or tracefs\n";
        return 2;
      }
    }
    else if (k == "--libbpf-tools") a.tools = next();
    else {
      std::cerr << "usage: mltap_ebpf_overhead [--rounds N] [--open N] [--fork N] [--pipe N] [--write N] [--json FILE] [--no-peers] [--libbpf-tools DIR] [--attach auto|tp_btf|raw_tp|tracefs]\n";
      return 2;
    }
  }
  if (geteuid() != 0) {
    std::cerr << "mltap_ebpf_overhead: must run as root (loads BPF programs)\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::err);
  char tmpl[] = "/var/tmp/mltap-bench-XXXXXX";
  if (!mkdtemp(tmpl)) {
    std::cerr << "mkdtemp: " << std::strerror(errno) << "\n";
    return 1;
  }
  g_dir = tmpl;
  const std::vector<std::pair<std::string, long>> workloads = {
      {"open_close", a.open_n}, {"fork_exec", a.fork_n}, {"pipe_pingpong", a.pipe_n},
      {"write_close", a.write_n}};

  // Scenario -> workload -> ns/op per round (wall time, and CPU time).
  std::map<std::string, std::map<std::string, std::vector<double>>> res, res_cpu;
  std::vector<std::string> order = {"baseline", "mltap/untracked", "mltap/tracked",
                                    "mltap+watch/untracked", "mltap+syscalls/untracked",
                                    "mltap+syscalls/tracked"};
  const std::string opensnoop = a.tools + "/opensnoop", runqlat = a.tools + "/runqlat";
  const bool have_peers = a.peers && access(opensnoop.c_str(), X_OK) == 0 && access(runqlat.c_str(), X_OK) == 0;
  if (have_peers) {
    order.push_back("opensnoop -p <other pid>");
    order.push_back("runqlat");
  } else if (a.peers) {
    std::cerr << "libbpf-tools not found in " << a.tools << " (apt-get install libbpf-tools): peers skipped\n";
  }

  // One function per configuration; each round runs them in a different (seeded) order so that
  // drift in the machine's load does not favour a fixed position.
  auto run_all = [&](const std::string& name, Tracer* tracked_by) {
    for (const auto& [kind, n] : workloads) {
      const Sample smp = run_workload(kind, n, tracked_by);
      res[name][kind].push_back(smp.wall);
      res_cpu[name][kind].push_back(smp.cpu);
    }
  };
  std::vector<std::function<void()>> configs;
  configs.push_back([&] { run_all("baseline", nullptr); });
  for (bool sys : {false, true}) {
    configs.push_back([&, sys] {
      Tracer t(mltap_config(sys));
      t.start([](const mltap::core::SystemEvent&) {});
      const std::string name = sys ? "mltap+syscalls" : "mltap";
      run_all(name + "/untracked", nullptr);
      run_all(name + "/tracked", &t);
    });
  }
  configs.push_back([&] {
    // fanotify on the directory write_close writes into (every write is an event).
    Tracer t(mltap_config(false, true));
    t.start([](const mltap::core::SystemEvent&) {});
    run_all("mltap+watch/untracked", nullptr);
  });
  if (have_peers) {
    configs.push_back([&] {
      Peer p(opensnoop, {"-p", "1"});  // filtered to another process: nothing printed
      if (!p.ok()) std::cerr << "opensnoop did not attach\n";
      run_all("opensnoop -p <other pid>", nullptr);
    });
    configs.push_back([&] {
      Peer p(runqlat, {"3600", "1"});
      if (!p.ok()) std::cerr << "runqlat did not attach\n";
      run_all("runqlat", nullptr);
    });
  }
  for (const auto& [kind, n] : workloads) (void)run_workload(kind, n / 10, nullptr);  // warm-up
  std::mt19937 rng(12345);
  for (int round = 0; round < a.rounds; ++round) {
    std::cerr << "round " << (round + 1) << "/" << a.rounds << "\n";
    std::vector<std::size_t> idx(configs.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::shuffle(idx.begin(), idx.end(), rng);
    for (std::size_t i : idx) configs[i]();
  }

  // Per-program run time (stats on only for this pass: they add their own overhead). Untracked
  // runs (what every other process on the host pays) and tracked runs are reported apart, next
  // to empty programs on the same tracepoints (the floor) and libbpf-tools' programs.
  struct Row {
    std::string owner, program, workload;
    double ns_per_run;
    std::uint64_t runs;
  };
  std::vector<Row> prog_rows;
  std::map<std::string, std::map<std::string, double>> bpf_per_op;  // workload -> tracked? -> ns/op
  {
    const int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
    if (stats_fd < 0) std::cerr << "BPF_ENABLE_STATS failed: " << std::strerror(errno) << "\n";
    {
      floor_bpf* fl = floor_bpf__open_and_load();
      if (fl && floor_bpf__attach(fl) == 0) {
        for (const auto& [kind, n] : workloads) run_workload(kind, n / 4, nullptr);
        for (bpf_program* p : {fl->progs.empty_switch, fl->progs.empty_sys_enter}) {
          bpf_prog_info info{};
          __u32 len = sizeof(info);
          if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len) == 0 && info.run_cnt) {
            prog_rows.push_back({"floor", bpf_program__name(p), "all, untracked",
                                 static_cast<double>(info.run_time_ns) / static_cast<double>(info.run_cnt),
                                 info.run_cnt});
          }
        }
      }
      if (fl) floor_bpf__destroy(fl);
    }
    Tracer t(mltap_config(true));
    t.start([](const mltap::core::SystemEvent&) {});
    for (const auto& [kind, n] : workloads) run_workload(kind, n / 4, nullptr);
    std::map<std::string, mltap::core::ProgramStats> untracked;
    for (const auto& p : t.program_stats()) untracked[p.program] = p;
    for (const auto& [kind, n] : workloads) run_workload(kind, n / 4, &t);
    for (const auto& p : t.program_stats()) {
      const auto& u = untracked[p.program];
      const std::string label = p.program + " (" + p.probe + ")";
      if (u.run_count) {
        prog_rows.push_back({"mltap", label, "all, untracked",
                             static_cast<double>(u.run_time_ns) / static_cast<double>(u.run_count), u.run_count});
      }
      const std::uint64_t cnt = p.run_count - u.run_count, ns = p.run_time_ns - u.run_time_ns;
      if (cnt) {
        prog_rows.push_back({"mltap", label, "all, tracked", static_cast<double>(ns) / static_cast<double>(cnt), cnt});
      }
    }
    if (have_peers) {
      for (const auto& [tool, args] : std::vector<std::pair<std::string, std::vector<std::string>>>{
               {opensnoop, {"-p", "1"}}, {runqlat, {"3600", "1"}}}) {
        Peer p(tool, args);
        for (const auto& [kind, n] : workloads) run_workload(kind, n / 4, nullptr);
        for (auto id : p.progs()) {
          const ProgRun r = prog_run(id);
          if (!r.cnt) continue;
          prog_rows.push_back({tool.substr(tool.rfind('/') + 1), r.name, "all",
                               static_cast<double>(r.ns) / static_cast<double>(r.cnt), r.cnt});
        }
      }
    }
    // BPF time per operation with the default probes: every nanosecond mltap's programs ran
    // (on any CPU, for any process: an upper bound) while one workload ran, divided by its
    // operations. Unlike the ratios above this does not drown in run-to-run noise.
    {
      Tracer d(mltap_config(false));
      d.start([](const mltap::core::SystemEvent&) {});
      auto total_ns = [&d] {
        std::uint64_t ns = 0;
        for (const auto& p : d.program_stats()) ns += p.run_time_ns;
        return ns;
      };
      for (const auto& [kind, n] : workloads) {
        for (bool tracked : {false, true}) {
          std::vector<double> per_op;
          for (int r = 0; r < 3; ++r) {
            const std::uint64_t before = total_ns();
            run_workload(kind, n / 4, tracked ? &d : nullptr);
            per_op.push_back(static_cast<double>(total_ns() - before) / static_cast<double>(n / 4));
          }
          bpf_per_op[kind][tracked ? "tracked" : "untracked"] = median(per_op);
        }
      }
    }
    if (stats_fd >= 0) close(stats_fd);
  }

  // Report.
  nlohmann::json j;
  for (const auto& [what, table] : {std::pair<std::string, decltype(res)*>{"wall time", &res},
                                     std::pair<std::string, decltype(res)*>{"CPU time", &res_cpu}}) {
    std::printf("\n%s per op, median of %d rounds; ratio = scenario / baseline of the same run\n",
                what.c_str(), a.rounds);
    std::printf("%-28s", "scenario");
    for (const auto& [kind, n] : workloads) std::printf(" | %-24s", (kind + " (ns/op)").c_str());
    std::printf("\n");
    std::map<std::string, double> base;
    for (const auto& [kind, n] : workloads) base[kind] = median((*table)["baseline"][kind]);
    for (const auto& s : order) {
      std::printf("%-28s", s.c_str());
      for (const auto& [kind, n] : workloads) {
        const double m = median((*table)[s][kind]);
        const double ratio = base[kind] > 0 ? m / base[kind] : 0;
        std::printf(" | %12.1f  x%-9.3f", m, ratio);
        j["scenarios"][what][s][kind] = {{"median_ns", m}, {"ratio", ratio}, {"rounds", (*table)[s][kind]}};
      }
      std::printf("\n");
    }
  }
  std::printf("\nper-program run time (kernel BPF stats; workloads run untracked, then tracked)\n"
              "%-10s %-36s %-16s %10s %10s\n", "owner", "program", "processes", "ns/run", "runs");
  for (const auto& r : prog_rows) {
    std::printf("%-10s %-36s %-16s %10.1f %10llu\n", r.owner.c_str(), r.program.c_str(), r.workload.c_str(),
                r.ns_per_run, static_cast<unsigned long long>(r.runs));
    j["programs"].push_back({{"owner", r.owner}, {"program", r.program}, {"processes", r.workload},
                             {"ns_per_run", r.ns_per_run}, {"runs", r.runs}});
  }
  std::printf("\nBPF time per operation, default probes (kernel BPF stats, all CPUs; median of 3)\n"
              "%-16s %14s %22s %22s\n", "workload", "baseline CPU", "untracked", "tracked");
  for (const auto& [kind, n] : workloads) {
    const double base = median(res_cpu["baseline"][kind]);
    const double u = bpf_per_op[kind]["untracked"], t = bpf_per_op[kind]["tracked"];
    const double up = base > 0 ? 100.0 * u / base : 0, tp = base > 0 ? 100.0 * t / base : 0;
    std::printf("%-16s %11.1f ns %10.1f ns %7.2f%% %10.1f ns %7.2f%%\n", kind.c_str(), base, u, up, t, tp);
    j["bpf_ns_per_op"][kind] = {{"baseline_cpu_ns", base}, {"untracked_ns", u}, {"untracked_percent", up},
                                {"tracked_ns", t}, {"tracked_percent", tp}};
  }
  if (!a.json_out.empty()) std::ofstream(a.json_out) << j.dump(2) << "\n";
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
  return 0;
}
