// The same events through each attach method the loader can choose: raw_tp and tracefs
// tracepoints (tracefs mounted by the tracer when needed).
#include <gtest/gtest.h>

#include <fstream>

#include "ebpf_test_util.hpp"

namespace mltap::bpf::test {
namespace {

using namespace std::chrono_literals;

void exec_exit_through(AttachMode mode, const std::string& method) {
  TracerConfig cfg;
  cfg.attach_mode = mode;
  cfg.probes[static_cast<std::size_t>(Probe::file_watch)] = false;
  EventLog log;
  Tracer t(cfg);
  t.start(log.callback());
  for (Probe p : {Probe::exec, Probe::fork, Probe::exit, Probe::signal, Probe::oom_kill}) {
    const auto s = t.probe_status()[static_cast<std::size_t>(p)];
    ASSERT_TRUE(s.up) << s.probe << ": " << s.reason;
    EXPECT_EQ(s.method, method) << s.probe;
  }
  Child c({"exec-exit", "3"});
  ASSERT_EQ(t.track(c.upid(), c.start_ticks(), "modes"), TrackResult::tracked);
  c.go();
  ASSERT_EQ(c.wait(), 0);
  auto fork = log.wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::fork && e.subject.pid == c.upid();
  });
  ASSERT_TRUE(fork);
  auto ex = log.wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exit && e.subject.pid == fork->other.pid;
  });
  ASSERT_TRUE(ex) << "no exit event of the child through " << method;
  EXPECT_EQ(ex->exit_code.value_or(-1), 3);
  EXPECT_EQ(ex->root.pid, c.upid());
  EXPECT_EQ(ex->source, "bpf:" + method);
  auto exec = log.wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::exec && e.subject.pid == fork->other.pid;
  });
  ASSERT_TRUE(exec);
  EXPECT_EQ(exec->path, "/bin/sh");

  Child k({"sleep"});
  ASSERT_EQ(t.track(k.upid(), k.start_ticks(), "modes"), TrackResult::tracked);
  ASSERT_EQ(kill(k.pid(), SIGKILL), 0);
  k.wait();
  auto sig = log.wait_for([&](const SystemEvent& e) {
    return e.kind == EventKind::signal && e.subject.pid == k.upid();
  });
  ASSERT_TRUE(sig);
  EXPECT_EQ(sig->signal, SIGKILL);
  EXPECT_TRUE(sig->fatal);
  EXPECT_EQ(sig->other.pid, static_cast<std::uint32_t>(getpid()));
}

TEST(AttachModes, RawTracepoints) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  exec_exit_through(AttachMode::raw_tp, "raw_tp");
}

TEST(AttachModes, TracefsTracepoints) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  exec_exit_through(AttachMode::tracefs, "tracefs");
}

TEST(AttachModes, ProbesWithoutATracefsVariantSayWhy) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  TracerConfig cfg;
  cfg.attach_mode = AttachMode::tracefs;
  Tracer t(cfg);
  t.start(nullptr);
  const auto s = t.probe_status()[static_cast<std::size_t>(Probe::runqueue)];
  EXPECT_FALSE(s.up);
  EXPECT_NE(s.reason.find("attach_mode tracefs"), std::string::npos) << s.reason;
}

TEST(AttachModes, DisabledTracingRunsNothingAndSaysSo) {
  TracerConfig cfg;
  cfg.enabled = false;
  Tracer t(cfg);
  t.start(nullptr);
  for (const auto& s : t.probe_status()) {
    EXPECT_FALSE(s.up);
    EXPECT_NE(s.reason.find("disabled"), std::string::npos) << s.probe;
  }
  Child c({"sleep"});
  EXPECT_EQ(t.track(c.upid(), c.start_ticks(), "x"), TrackResult::userspace_only);
}

}  // namespace
}  // namespace mltap::bpf::test

namespace mltap::bpf::test {
namespace {

// The run-queue probe has three implementations; each must measure the same contention.
void runqueue_through(const std::vector<std::string>& unavailable, AttachMode mode,
                      const std::string& expect_prog) {
  TracerConfig cfg;
  cfg.attach_mode = mode;
  for (auto& p : cfg.probes) p = false;
  cfg.probes[static_cast<std::size_t>(Probe::runqueue)] = true;
  TracerOptions opts;
  opts.unavailable_programs = unavailable;
  Tracer t(cfg, opts);
  t.start(nullptr);
  const auto s = t.probe_status()[static_cast<std::size_t>(Probe::runqueue)];
  ASSERT_TRUE(s.up) << s.reason;
  bool loaded = false;
  for (const auto& p : t.program_stats()) loaded |= p.program == expect_prog;
  ASSERT_TRUE(loaded) << expect_prog << " not loaded";
  ASSERT_EQ(system("command -v stress-ng >/dev/null"), 0) << "stress-ng is required";
  Child c({"spin-hold", "2"});
  ASSERT_EQ(t.track(c.upid(), c.start_ticks(), "contended"), TrackResult::tracked);
  c.go();
  ASSERT_EQ(system("stress-ng --cpu 2 --taskset 0 --timeout 2s --quiet >/dev/null 2>&1"), 0);
  std::this_thread::sleep_for(300ms);  // the spin is over; the child now sleeps
  // The kernel's own total wait on the run queue (/proc/<pid>/schedstat, second field).
  std::ifstream ss("/proc/" + std::to_string(c.pid()) + "/schedstat");
  std::uint64_t on_cpu = 0, run_delay = 0;
  ASSERT_TRUE(ss >> on_cpu >> run_delay);
  std::this_thread::sleep_for(1500ms);  // histograms are folded every second
  const auto st = t.stats();
  auto it = st.runqueue_by_component.find("contended");
  ASSERT_NE(it, st.runqueue_by_component.end());
  EXPECT_GT(it->second.count, 10u);
  EXPECT_GE(it->second.quantile_upper_ns(0.99), 1'000'000u);
  // Same waits as the scheduler's accounting, within 10% (the sched_info variant lags one
  // time slice; the wakeup variants use a different clock).
  ASSERT_GT(run_delay, 100'000'000u) << "3 CPU hogs on one CPU for 2 s";
  EXPECT_NEAR(static_cast<double>(it->second.sum_ns), static_cast<double>(run_delay),
              0.10 * static_cast<double>(run_delay));
}

TEST(RunQueueVariants, SchedInfo) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  runqueue_through({}, AttachMode::automatic, "switch_si_btf");
}

TEST(RunQueueVariants, WakeupAndTaskStorage) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  runqueue_through({"switch_si_btf"}, AttachMode::automatic, "switch_btf");
}

TEST(RunQueueVariants, RawTracepointsAndHash) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  runqueue_through({}, AttachMode::raw_tp, "switch_raw");
}

TEST(Fallbacks, UnavailableTpBtfFallsBackToRawTp) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  TracerConfig cfg;
  for (auto& p : cfg.probes) p = false;
  cfg.probes[static_cast<std::size_t>(Probe::exec)] = true;
  TracerOptions opts;
  opts.unavailable_programs = {"exec_btf"};
  Tracer t(cfg, opts);
  t.start(nullptr);
  const auto s = t.probe_status()[static_cast<std::size_t>(Probe::exec)];
  ASSERT_TRUE(s.up) << s.reason;
  EXPECT_EQ(s.method, "raw_tp");
}

TEST(Fallbacks, NoVariantLeftSaysWhy) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  TracerConfig cfg;
  for (auto& p : cfg.probes) p = false;
  cfg.probes[static_cast<std::size_t>(Probe::oom_kill)] = true;
  TracerOptions opts;
  opts.unavailable_programs = {"oom_btf", "oom_raw", "oom_tp"};
  Tracer t(cfg, opts);
  t.start(nullptr);
  const auto s = t.probe_status()[static_cast<std::size_t>(Probe::oom_kill)];
  EXPECT_FALSE(s.up);
  EXPECT_NE(s.reason.find("oom_btf"), std::string::npos) << s.reason;
  EXPECT_NE(s.reason.find("raw_tp"), std::string::npos) << s.reason;
}

}  // namespace
}  // namespace mltap::bpf::test
