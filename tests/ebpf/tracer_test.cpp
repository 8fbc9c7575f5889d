// The tracer on the real kernel, as root, with real processes: every event must be reported
// for the right process (pid and start time) and component, and the same action by an
// untracked process must not be. Skips only when a kernel feature is really absent.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "ebpf_test_util.hpp"

namespace mltap::bpf::test {

using core::ProbeStatus;

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool probe_absent(const ProbeStatus& s) {
  return s.reason.find("no raw tracepoint") != std::string::npos ||
         s.reason.find("no tracefs event") != std::string::npos;
}

#define REQUIRE_PROBE(tracer, p)                                                              \
  do {                                                                                        \
    const auto s__ = (tracer).probe_status()[static_cast<std::size_t>(p)];                    \
    if (!s__.up && probe_absent(s__)) GTEST_SKIP() << "kernel lacks " << s__.probe << ": " << s__.reason; \
    ASSERT_TRUE(s__.up) << s__.probe << " is down: " << s__.reason;                          \
  } while (0)

class TracerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    dir_ = fs::temp_directory_path() / ("mltap-ebpf-test-" + std::to_string(getpid()));
    fs::create_directories(dir_ / "watched");
    fs::create_directories(dir_ / "other");
    TracerConfig cfg;
    cfg.files.watch_dirs = {(dir_ / "watched").string()};
    cfg.summary_interval = 1s;
    cfg.runqueue_report_threshold = 1ms;
    cfg.latency_min_samples = 3;
    log_ = new EventLog;
    tracer_ = new Tracer(cfg);
    tracer_->start(log_->callback());
  }
  static void TearDownTestSuite() {
    delete tracer_;
    delete log_;
    tracer_ = nullptr;
    log_ = nullptr;
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the eBPF tests load BPF programs and must run as root";
  }

  static Tracer& tracer() { return *tracer_; }
  static EventLog& log() { return *log_; }
  static fs::path dir() { return dir_; }

  static void track(Child& c, const std::string& component) {
    ASSERT_GT(c.pid(), 0);
    ASSERT_NE(c.start_ticks(), 0u);
    ASSERT_EQ(tracer().track(c.upid(), c.start_ticks(), component), TrackResult::tracked);
  }

  static inline Tracer* tracer_ = nullptr;
  static inline EventLog* log_ = nullptr;
  static inline fs::path dir_;
};

TEST_F(TracerTest, KernelProbesAreUp) {
  for (const auto& s : tracer().probe_status()) {
    if (s.probe == "file_syscalls") {
      EXPECT_FALSE(s.up) << "off by default";
      EXPECT_NE(s.reason.find("disabled"), std::string::npos) << s.reason;
      continue;
    }
    if (!s.up && probe_absent(s)) continue;
    EXPECT_TRUE(s.up) << s.probe << ": " << s.reason;
    EXPECT_FALSE(s.method.empty()) << s.probe;
  }
}

TEST_F(TracerTest, TrackRejectsWrongStartTimeAndBadPids) {
  Child c({"sleep"});
  EXPECT_EQ(tracer().track(c.upid(), c.start_ticks() + 1, "x"), TrackResult::no_such_process);
  EXPECT_EQ(tracer().track(0, 1, "x"), TrackResult::invalid);
  EXPECT_EQ(tracer().track(static_cast<std::uint32_t>(getpid()), start_ticks_of(getpid()), "x"),
            TrackResult::invalid);
}

// (a) a tracked process execs a child that exits with code 3.
TEST_F(TracerTest, ExecOfChildExitingWithCode3) {
  REQUIRE_PROBE(tracer(), Probe::exec);
  Child untracked({"exec-exit", "3"});
  Child tracked({"exec-exit", "3"});
  track(tracked, "feature-svc");
  untracked.go();
  ASSERT_NE(untracked.wait(), -1);
  tracked.go();
  ASSERT_NE(tracked.wait(), -1);

  auto fork = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::fork && e.subject.pid == tracked.upid();
  });
  ASSERT_TRUE(fork) << "no fork event for the tracked process";
  EXPECT_EQ(fork->subject.start_ticks, tracked.start_ticks());
  EXPECT_EQ(fork->component, "feature-svc");
  const std::uint32_t child = fork->other.pid;
  ASSERT_NE(child, 0u);
  EXPECT_NE(fork->other.start_ticks, 0u);

  auto exec = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exec && e.subject.pid == child;
  });
  ASSERT_TRUE(exec) << "no exec event for the child";
  EXPECT_EQ(exec->path, "/bin/sh");
  EXPECT_TRUE(exec->tracked);
  EXPECT_EQ(exec->root.pid, tracked.upid());
  EXPECT_EQ(exec->root.start_ticks, tracked.start_ticks());
  EXPECT_EQ(exec->component, "feature-svc");
  EXPECT_GT(exec->unix_ns, 1'600'000'000'000'000'000ULL);

  auto exit3 = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exit && e.subject.pid == child;
  });
  ASSERT_TRUE(exit3) << "no exit event for the child";
  ASSERT_TRUE(exit3->exit_code.has_value());
  EXPECT_EQ(*exit3->exit_code, 3);
  EXPECT_EQ(exit3->signal, 0);
  EXPECT_EQ(exit3->root.pid, tracked.upid());
  EXPECT_GE(exit3->boot_ns, exec->boot_ns);

  auto exit0 = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exit && e.subject.pid == tracked.upid();
  });
  ASSERT_TRUE(exit0);
  EXPECT_EQ(exit0->exit_code.value_or(-1), 0);
  EXPECT_EQ(exit0->subject.start_ticks, tracked.start_ticks());

  EXPECT_TRUE(log().matching([&](const SystemEvent& e) { return involves(e, untracked.upid()); })
                  .empty())
      << "events reported for an untracked process";
}

// (b) a tracked process killed with SIGKILL: the signal names the sender.
TEST_F(TracerTest, SigkillNamesTheSender) {
  REQUIRE_PROBE(tracer(), Probe::signal);
  Child untracked({"sleep"});
  Child tracked({"sleep"});
  track(tracked, "scorer");
  ASSERT_EQ(kill(untracked.pid(), SIGKILL), 0);
  ASSERT_NE(untracked.wait(), -1);
  ASSERT_EQ(kill(tracked.pid(), SIGKILL), 0);
  const int st = tracked.wait();
  ASSERT_TRUE(WIFSIGNALED(st));

  auto sig = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::signal && e.subject.pid == tracked.upid();
  });
  ASSERT_TRUE(sig) << "no signal event";
  EXPECT_EQ(sig->signal, SIGKILL);
  EXPECT_TRUE(sig->fatal);
  EXPECT_EQ(sig->subject.start_ticks, tracked.start_ticks());
  EXPECT_EQ(sig->other.pid, static_cast<std::uint32_t>(getpid())) << "sender must be this test";
  EXPECT_EQ(sig->other.start_ticks, start_ticks_of(getpid()));
  EXPECT_EQ(sig->component, "scorer");

  auto ex = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exit && e.subject.pid == tracked.upid();
  });
  ASSERT_TRUE(ex);
  EXPECT_EQ(ex->signal, SIGKILL);
  EXPECT_FALSE(ex->exit_code.has_value());

  EXPECT_TRUE(log().matching([&](const SystemEvent& e) { return involves(e, untracked.upid()); })
                  .empty());
}

class MemoryCgroup {
 public:
  explicit MemoryCgroup(const std::string& name) {
    path_ = "/sys/fs/cgroup/memory/" + name;
    if (mkdir(path_.c_str(), 0755) != 0 && errno != EEXIST) {
      path_.clear();
      return;
    }
    std::ofstream(path_ + "/memory.limit_in_bytes") << (64 << 20);
  }
  ~MemoryCgroup() {
    if (path_.empty()) return;
    for (int i = 0; i < 100 && rmdir(path_.c_str()) != 0; ++i) usleep(20000);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// (c) OOM kill inside a memory-limited cgroup (v1): victim and trigger identified; an untracked
// victim is reported as host-wide, not as the tracked process.
TEST_F(TracerTest, OomKillInMemoryCgroup) {
  if (!fs::exists("/sys/fs/cgroup/memory/cgroup.procs")) {
    GTEST_SKIP() << "the cgroup v1 memory controller is not mounted at /sys/fs/cgroup/memory";
  }
  REQUIRE_PROBE(tracer(), Probe::oom_kill);
  MemoryCgroup cg_t("mltap-test-oom-t-" + std::to_string(getpid()));
  MemoryCgroup cg_u("mltap-test-oom-u-" + std::to_string(getpid()));
  ASSERT_FALSE(cg_t.path().empty());
  ASSERT_FALSE(cg_u.path().empty());
  Child untracked({"oom", cg_u.path()});
  Child tracked({"oom", cg_t.path()});
  track(tracked, "trainer");
  untracked.go();
  const int ust = untracked.wait(30s);
  ASSERT_TRUE(WIFSIGNALED(ust) && WTERMSIG(ust) == SIGKILL) << "untracked child was not OOM-killed";
  tracked.go();
  const int tst = tracked.wait(30s);
  ASSERT_TRUE(WIFSIGNALED(tst) && WTERMSIG(tst) == SIGKILL) << "tracked child was not OOM-killed";

  auto oom = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::oom_kill && e.subject.pid == tracked.upid();
  });
  ASSERT_TRUE(oom) << "no oom_kill event for the tracked victim";
  EXPECT_TRUE(oom->tracked);
  EXPECT_EQ(oom->component, "trainer");
  EXPECT_EQ(oom->subject.start_ticks, tracked.start_ticks());
  EXPECT_EQ(oom->other.pid, tracked.upid()) << "its own allocation triggered the kill";
  EXPECT_TRUE(oom->other_tracked);
  EXPECT_GT(oom->memory_bytes, 32u << 20);

  auto ex = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exit && e.subject.pid == tracked.upid();
  });
  ASSERT_TRUE(ex);
  EXPECT_EQ(ex->signal, SIGKILL);

  // Host-wide: the untracked victim is reported, but not as a tracked process.
  auto host = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::oom_kill && e.subject.pid == untracked.upid();
  });
  ASSERT_TRUE(host) << "host-wide OOM kills must be reported";
  EXPECT_FALSE(host->tracked);
  EXPECT_TRUE(host->component.empty());
  EXPECT_FALSE(host->root.known());
  EXPECT_TRUE(log().matching([&](const SystemEvent& e) {
                     return e.kind != EventKind::oom_kill && involves(e, untracked.upid());
                   }).empty());
}

// (d) model file replaced by rename, opened for writing, deleted (fanotify on watch_dirs).
TEST_F(TracerTest, ModelFileChangesInWatchedDirectory) {
  REQUIRE_PROBE(tracer(), Probe::file_watch);
  const fs::path w = dir() / "watched";
  std::ofstream(w / "model.pkl") << "x";
  std::ofstream(w / "notes.txt") << "x";

  Child t_rename({"rename", (w / ".model.onnx.tmp").string(), (w / "model.onnx").string()});
  Child t_write({"write", (w / "model.pt").string()});
  Child t_delete({"delete", (w / "model.pkl").string()});
  Child t_other({"write", (w / "notes.txt").string()});
  for (Child* c : {&t_rename, &t_write, &t_delete, &t_other}) track(*c, "inference");
  Child u_outside({"rename", (dir() / "other/.m.tmp").string(), (dir() / "other/model.onnx").string()});
  Child u_inside({"write", (w / "deployed.safetensors").string()});
  for (Child* c : {&u_outside, &u_inside, &t_rename, &t_write, &t_delete, &t_other}) {
    c->go();
    ASSERT_EQ(c->wait(), 0);
  }

  auto renamed = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::file_change && e.subject.pid == t_rename.upid();
  });
  ASSERT_TRUE(renamed) << "no file_change for the rename";
  EXPECT_EQ(renamed->file_op, core::FileOp::renamed_onto);
  EXPECT_EQ(renamed->path, (w / "model.onnx").string());
  EXPECT_EQ(renamed->old_path, (w / ".model.onnx.tmp").string());
  EXPECT_TRUE(renamed->tracked);
  EXPECT_EQ(renamed->component, "inference");
  EXPECT_EQ(renamed->subject.start_ticks, t_rename.start_ticks());
  EXPECT_EQ(renamed->source, "fanotify");

  auto written = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::file_change && e.subject.pid == t_write.upid();
  });
  ASSERT_TRUE(written);
  EXPECT_EQ(written->file_op, core::FileOp::written);
  EXPECT_EQ(written->path, (w / "model.pt").string());

  auto deleted = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::file_change && e.subject.pid == t_delete.upid();
  });
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->file_op, core::FileOp::deleted);
  EXPECT_EQ(deleted->path, (w / "model.pkl").string());

  // An untracked writer in a watched directory: reported as host-wide (someone replaced the
  // model), never attributed to a tracked process.
  auto host = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::file_change && e.subject.pid == u_inside.upid();
  });
  ASSERT_TRUE(host);
  EXPECT_FALSE(host->tracked);
  EXPECT_TRUE(host->component.empty());
  EXPECT_EQ(host->path, (w / "deployed.safetensors").string());

  // Not a model file, or not a watched directory and not tracked: nothing.
  EXPECT_TRUE(log().matching([&](const SystemEvent& e) { return involves(e, t_other.upid()) &&
                                                               e.kind == EventKind::file_change; })
                  .empty());
  EXPECT_TRUE(log().matching([&](const SystemEvent& e) { return involves(e, u_outside.upid()); })
                  .empty());
}

TEST_F(TracerTest, UntrackedWritersAreDroppedWhenConfigured) {
  if (!tracer().probe_status()[static_cast<std::size_t>(Probe::file_watch)].up) {
    GTEST_SKIP() << "fanotify unavailable";
  }
  TracerConfig cfg;
  cfg.enabled = true;
  for (auto& p : cfg.probes) p = false;
  cfg.probes[static_cast<std::size_t>(Probe::file_watch)] = true;
  const fs::path w = dir() / "quiet";
  fs::create_directories(w);
  cfg.files.watch_dirs = {w.string()};
  cfg.files.report_untracked_actors = false;
  EventLog events;
  Tracer t(cfg);
  t.start(events.callback());
  Child u({"write", (w / "m.onnx").string()});
  Child k({"write", (w / "k.onnx").string()});
  ASSERT_EQ(t.track(k.upid(), k.start_ticks(), "c"), TrackResult::userspace_only);
  u.go();
  ASSERT_EQ(u.wait(), 0);
  k.go();
  ASSERT_EQ(k.wait(), 0);
  auto ke = events.wait_for([&](const SystemEvent& e) { return e.subject.pid == k.upid(); });
  ASSERT_TRUE(ke) << "the tracked (userspace-only) writer must be reported";
  EXPECT_TRUE(ke->tracked);
  EXPECT_EQ(ke->component, "c");
  EXPECT_TRUE(events.matching([&](const SystemEvent& e) { return e.subject.pid == u.upid(); }).empty());
}

// A short-lived untracked writer (a `cp`, a script replacing the model) is often gone from /proc
// when its event is read: it is named from the kernel's record of its exec (proc_names).
TEST_F(TracerTest, WriterGoneBeforeItsEventIsReadIsNamedFromItsExec) {
  if (!tracer().probe_status()[static_cast<std::size_t>(Probe::file_watch)].up) {
    GTEST_SKIP() << "fanotify unavailable";
  }
  REQUIRE_PROBE(tracer(), Probe::exec);
  const auto comm_of = [](pid_t pid) {
    std::string c;
    std::getline(std::ifstream("/proc/" + std::to_string(pid) + "/comm"), c);
    return c;
  };
  {  // The real /proc, with whatever timing: the event carries the writer's name either way.
    const fs::path w = dir() / "watched";
    Child c({"write", (w / "short.onnx").string()});
    const std::string comm = comm_of(c.pid());
    ASSERT_FALSE(comm.empty());
    c.go();
    ASSERT_EQ(c.wait(), 0);
    auto e = log().wait_for([&](const SystemEvent& x) {
      return x.kind == EventKind::file_change && x.subject.pid == c.upid();
    });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->subject.comm, comm);
    EXPECT_EQ(e->subject.start_ticks, c.start_ticks());
  }
  // Deterministically gone: a /proc that knows no process (proc_root, injectable for this), so
  // only the kernel's record can name it. The exec and the write are real.
  TracerConfig cfg;
  cfg.enabled = true;
  for (auto& p : cfg.probes) p = false;
  cfg.probes[static_cast<std::size_t>(Probe::exec)] = true;
  cfg.probes[static_cast<std::size_t>(Probe::fork)] = true;
  cfg.probes[static_cast<std::size_t>(Probe::file_watch)] = true;
  const fs::path w = dir() / "gone";
  const fs::path no_proc = dir() / "no-proc";
  fs::create_directories(w);
  fs::create_directories(no_proc);
  cfg.files.watch_dirs = {w.string()};
  TracerOptions opts;
  opts.proc_root = no_proc.string();
  Child before({"write", (w / "before.onnx").string()});  // forked and exec'd before the tracer
  EventLog events;
  Tracer t(cfg, opts);
  t.start(events.callback());
  REQUIRE_PROBE(t, Probe::exec);
  REQUIRE_PROBE(t, Probe::fork);
  REQUIRE_PROBE(t, Probe::file_watch);
  Child c({"write", (w / "model.onnx").string()});  // its exec comes after the tracer started
  const std::string comm = comm_of(c.pid());
  c.go();
  ASSERT_EQ(c.wait(), 0);
  auto e = events.wait_for([&](const SystemEvent& x) {
    return x.kind == EventKind::file_change && x.subject.pid == c.upid();
  });
  ASSERT_TRUE(e) << "no file_change for the writer";
  EXPECT_FALSE(e->tracked);
  EXPECT_EQ(e->subject.comm, comm);
  EXPECT_EQ(e->subject.start_ticks, c.start_ticks());
  EXPECT_EQ(t.stats().file_actors["proc_names"], 1u);
  // A writer that never exec'd (a fork of this test process): its parent's name, from the fork.
  const std::string forked_path = (w / "forked.onnx").string();
  const pid_t f = ::fork();
  ASSERT_GE(f, 0);
  if (f == 0) {
    const int fd = ::open(forked_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    _exit(fd >= 0 && ::write(fd, "x", 1) == 1 && ::close(fd) == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(f, &status, 0), f);
  ASSERT_EQ(status, 0);
  auto forked = events.wait_for([&](const SystemEvent& x) {
    return x.kind == EventKind::file_change && x.subject.pid == static_cast<std::uint32_t>(f);
  });
  ASSERT_TRUE(forked);
  EXPECT_EQ(forked->subject.comm, comm_of(::getpid()));
  EXPECT_NE(forked->subject.start_ticks, 0u);
  // A writer the kernel saw neither fork nor exec (before the tracer started): no name to give,
  // counted.
  EXPECT_EQ(t.stats().file_actors["unknown"], 0u);
  before.go();
  ASSERT_EQ(before.wait(), 0);
  auto unnamed = events.wait_for([&](const SystemEvent& x) {
    return x.kind == EventKind::file_change && x.subject.pid == before.upid();
  });
  ASSERT_TRUE(unnamed);
  EXPECT_TRUE(unnamed->subject.comm.empty());
  auto st = t.stats();
  EXPECT_EQ(st.file_actors["unknown"], 1u);
  EXPECT_EQ(st.file_actors["proc_names"], 2u);
  EXPECT_EQ(st.file_actors["proc"], 0u);
  EXPECT_EQ(st.map_full["proc_names"], 0u);
}

// The optional syscall probe: tracked processes anywhere, untracked ones never.
TEST_F(TracerTest, FileSyscallProbeSeesTrackedWritersAnywhere) {
  TracerConfig cfg;
  for (auto& p : cfg.probes) p = false;
  cfg.probes[static_cast<std::size_t>(Probe::file_syscalls)] = true;
  cfg.probes[static_cast<std::size_t>(Probe::fork)] = true;
  EventLog events;
  Tracer t(cfg);
  t.start(events.callback());
  REQUIRE_PROBE(t, Probe::file_syscalls);
  const fs::path o = dir() / "other";
  Child u({"rename", (o / "u.tmp").string(), (o / "u-model.onnx").string()});
  Child k({"rename", (o / "k.tmp").string(), (o / "k-model.onnx").string()});
  ASSERT_EQ(t.track(k.upid(), k.start_ticks(), "trainer"), TrackResult::tracked);
  u.go();
  ASSERT_EQ(u.wait(), 0);
  k.go();
  ASSERT_EQ(k.wait(), 0);
  auto e = events.wait_for([&](const SystemEvent& x) {
    return x.kind == EventKind::file_change && x.subject.pid == k.upid() &&
           x.file_op == core::FileOp::renamed_onto;
  });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->path, (o / "k-model.onnx").string());
  EXPECT_EQ(e->old_path, (o / "k.tmp").string());
  EXPECT_EQ(e->component, "trainer");
  EXPECT_EQ(e->subject.start_ticks, k.start_ticks());
  EXPECT_EQ(e->source.rfind("bpf:", 0), 0u);
  // The write of k.tmp does not match a model pattern: not reported.
  EXPECT_TRUE(events.matching([&](const SystemEvent& x) {
                      return x.subject.pid == k.upid() && x.file_op == core::FileOp::written;
                    }).empty());
  EXPECT_TRUE(events.matching([&](const SystemEvent& x) { return involves(x, u.upid()); }).empty());
}

// (e) CPU contention: the run-queue histogram of the component shows it.
TEST_F(TracerTest, RunQueueLatencyUnderCpuContention) {
  REQUIRE_PROBE(tracer(), Probe::runqueue);
  ASSERT_EQ(system("command -v stress-ng >/dev/null"), 0) << "stress-ng is required (packaging/deps.txt)";
  const auto before = tracer().stats().runqueue_by_component["cpu-starved"].count;
  Child untracked_spinner({"spin", "3"});
  Child tracked({"spin", "3"});
  track(tracked, "cpu-starved");
  untracked_spinner.go();
  tracked.go();
  ASSERT_EQ(system("stress-ng --cpu 2 --taskset 0 --timeout 3s --quiet >/dev/null 2>&1"), 0);
  ASSERT_EQ(tracked.wait(), 0);
  ASSERT_EQ(untracked_spinner.wait(), 0);

  auto ev = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::runqueue_latency && e.subject.pid == tracked.upid();
  }, 5s);
  ASSERT_TRUE(ev) << "no derived runqueue_latency event";
  EXPECT_EQ(ev->component, "cpu-starved");
  EXPECT_GE(ev->latency.p99_ns, 1'000'000u);

  std::this_thread::sleep_for(1500ms);  // histograms are folded every second
  const auto stats = tracer().stats();
  auto it = stats.runqueue_by_component.find("cpu-starved");
  ASSERT_NE(it, stats.runqueue_by_component.end());
  EXPECT_GT(it->second.count, before + 10);
  EXPECT_GE(it->second.quantile_upper_ns(0.99), 1'000'000u) << "4 runnable tasks on one CPU";
  for (const auto& [comp, h] : stats.runqueue_by_component) {
    EXPECT_NE(comp, "unknown") << "histogram of an untracked process";
  }
  EXPECT_TRUE(log().matching([&](const SystemEvent& e) { return involves(e, untracked_spinner.upid()); })
                  .empty());
}

TEST_F(TracerTest, BlockIoLatencyOfTrackedProcess) {
  REQUIRE_PROBE(tracer(), Probe::block_io);
  const fs::path f = fs::current_path() / ("mltap-dio-" + std::to_string(getpid()) + ".bin");
  Child tracked({"dio", f.string(), "50"});
  track(tracked, "loader");
  tracked.go();
  const int st = tracked.wait();
  std::error_code ec;
  fs::remove(f, ec);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 100) GTEST_SKIP() << "O_DIRECT unsupported in " << f.parent_path();
  ASSERT_EQ(st, 0);
  std::this_thread::sleep_for(1500ms);
  const auto stats = tracer().stats();
  auto it = stats.block_io_by_component.find("loader");
  ASSERT_NE(it, stats.block_io_by_component.end()) << "no block I/O histogram for the component";
  EXPECT_GE(it->second.count, 50u) << "at least the 50 reads (writes may merge)";
  EXPECT_GT(it->second.sum_ns, 0u);
}

TEST_F(TracerTest, FailedConnectIsReported) {
  REQUIRE_PROBE(tracer(), Probe::tcp_connect);
  // A port nobody listens on: bind, learn the port, close.
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  close(s);

  Child untracked({"connect", std::to_string(port)});
  Child tracked({"connect", std::to_string(port)});
  track(tracked, "feature-client");
  untracked.go();
  ASSERT_EQ(untracked.wait(), 0);
  tracked.go();
  ASSERT_EQ(tracked.wait(), 0);
  auto e = log().wait_for([&](const SystemEvent& x) {
    return x.kind == EventKind::tcp_connect_failed && x.subject.pid == tracked.upid();
  });
  ASSERT_TRUE(e) << "no tcp_connect_failed event";
  EXPECT_EQ(e->tcp.dport, port);
  EXPECT_EQ(e->tcp.daddr, "127.0.0.1");
  EXPECT_EQ(e->tcp.error, ECONNREFUSED);
  EXPECT_EQ(e->component, "feature-client");
  EXPECT_EQ(e->subject.start_ticks, tracked.start_ticks());
  EXPECT_TRUE(log().matching([&](const SystemEvent& x) { return involves(x, untracked.upid()); })
                  .empty());
}

TEST_F(TracerTest, SynRetransmitIsReported) {
  REQUIRE_PROBE(tracer(), Probe::tcp_retransmit);
  // A listener whose accept queue is full drops new SYNs: the client retransmits after ~1 s.
  const int l = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(l, 0), 0);
  socklen_t len = sizeof(a);
  getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  const int filler = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(filler, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  std::this_thread::sleep_for(100ms);

  Child tracked({"syn", std::to_string(port), "2.5"});
  track(tracked, "feature-client");
  tracked.go();
  ASSERT_EQ(tracked.wait(), 0);
  close(filler);
  close(l);
  auto e = log().wait_for([&](const SystemEvent& x) {
    return x.kind == EventKind::tcp_retransmit && x.subject.pid == tracked.upid();
  });
  ASSERT_TRUE(e) << "no tcp_retransmit event";
  EXPECT_EQ(e->tcp.dport, port);
  EXPECT_GE(e->tcp.count, 1u);
  EXPECT_EQ(e->component, "feature-client");
}

TEST_F(TracerTest, DescendantsAliveAtTrackTimeAreTracked) {
  REQUIRE_PROBE(tracer(), Probe::exit);
  // A shell with a child already running when the shell gets tracked.
  FILE* p = popen("sleep 30 & echo $!; wait", "r");
  ASSERT_NE(p, nullptr);
  unsigned sleeper = 0;
  ASSERT_EQ(fscanf(p, "%u", &sleeper), 1);
  auto st = naming::read_proc_stat(sleeper, "/proc");
  ASSERT_TRUE(st);
  const std::uint32_t sh = st->ppid;
  ASSERT_EQ(tracer().track(sh, start_ticks_of(static_cast<pid_t>(sh)), "pipeline"),
            TrackResult::tracked);
  kill(static_cast<pid_t>(sleeper), SIGKILL);
  pclose(p);
  auto ev = log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exit && e.subject.pid == sleeper;
  });
  ASSERT_TRUE(ev) << "a descendant alive at track() time must be tracked";
  EXPECT_EQ(ev->root.pid, sh);
  EXPECT_EQ(ev->component, "pipeline");
  EXPECT_EQ(ev->signal, SIGKILL);
}

TEST_F(TracerTest, UntrackStopsEvents) {
  REQUIRE_PROBE(tracer(), Probe::exec);
  Child c({"exec-exit", "4"});
  track(c, "gone");
  EXPECT_TRUE(tracer().untrack(c.upid(), c.start_ticks()));
  EXPECT_FALSE(tracer().untrack(c.upid(), c.start_ticks()));
  c.go();
  ASSERT_EQ(c.wait(), 0);
  // A marker process tracked afterwards: once its exit arrives, c's events would have too.
  Child marker({"exec-exit", "0"});
  track(marker, "marker");
  marker.go();
  ASSERT_EQ(marker.wait(), 0);
  ASSERT_TRUE(log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exit && e.subject.pid == marker.upid();
  }));
  for (const auto& e : log().matching([&](const SystemEvent& e) { return involves(e, c.upid()); })) {
    ADD_FAILURE() << "event after untrack: " << core::event_kind_name(e.kind) << " subject "
                  << e.subject.pid << " other " << e.other.pid << " root " << e.root.pid;
  }
}

TEST_F(TracerTest, CountsEventsByComponentAndKind) {
  REQUIRE_PROBE(tracer(), Probe::exec);
  Child c({"exec-exit", "0"});
  track(c, "counted");
  c.go();
  ASSERT_EQ(c.wait(), 0);
  ASSERT_TRUE(log().wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exit && e.subject.pid == c.upid();
  }));
  const auto s = tracer().stats();
  std::map<std::string, std::uint64_t> by_kind;
  for (const auto& e : s.events) {
    if (e.component == "counted") by_kind[e.kind] += e.count;
  }
  EXPECT_EQ(by_kind["fork"], 1u);
  EXPECT_EQ(by_kind["exec"], 1u);
  EXPECT_EQ(by_kind["exit"], 2u);
  EXPECT_EQ(s.lost_by_program.at("exec"), 0u);
  EXPECT_EQ(s.lost_by_program.at("exit"), 0u);
}

// Nothing silently lost: with a one-page ring and a reader that stalls, every fork is either
// delivered or counted as lost by the fork program.
TEST_F(TracerTest, RingBufferLossesAreCountedPerProgram) {
  TracerConfig cfg;
  for (auto& p : cfg.probes) p = false;
  cfg.probes[static_cast<std::size_t>(Probe::fork)] = true;
  cfg.ring_buffer_bytes = 4096;
  std::atomic<int> forks{0};
  std::atomic<bool> stalled{false};
  Tracer t(cfg);
  t.start([&](const SystemEvent& e) {
    if (e.kind == EventKind::fork) ++forks;
    if (!stalled.exchange(true)) std::this_thread::sleep_for(1500ms);  // a slow consumer
  });
  REQUIRE_PROBE(t, Probe::fork);
  constexpr int kForks = 300;
  Child c({"forks", std::to_string(kForks)});
  ASSERT_EQ(t.track(c.upid(), c.start_ticks(), "burst"), TrackResult::tracked);
  c.go();
  ASSERT_EQ(c.wait(), 0);
  std::this_thread::sleep_for(2500ms);
  const auto s = t.stats();
  const std::uint64_t lost = s.lost_by_program.at("fork");
  EXPECT_GT(lost, 0u) << "a 4 KiB ring cannot hold 300 fork records";
  EXPECT_EQ(static_cast<std::uint64_t>(forks.load()) + lost, static_cast<std::uint64_t>(kForks));
  std::uint64_t counted = 0;
  for (const auto& e : s.events) {
    if (e.component == "burst" && e.kind == "fork") counted += e.count;
  }
  EXPECT_EQ(counted, static_cast<std::uint64_t>(forks.load()));
}

TEST_F(TracerTest, ProgramRunStatsAreReadable) {
  const auto progs = tracer().program_stats();
  ASSERT_FALSE(progs.empty());
  bool has_switch = false;
  for (const auto& p : progs) has_switch |= p.probe == "runqueue";
  EXPECT_TRUE(has_switch || !tracer().probe_status()[static_cast<std::size_t>(Probe::runqueue)].up);
}

}  // namespace
}  // namespace mltap::bpf::test
