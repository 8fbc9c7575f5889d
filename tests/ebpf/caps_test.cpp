// Without privileges the tracer reports its missing probes cleanly; after dropping capabilities
// (in every thread) tracing and tracking still work.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bpf/capabilities.hpp"
#include "ebpf_test_util.hpp"

namespace mltap::bpf::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string run(const std::string& cmd, int& status) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    status = -1;
    return {};
  }
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  status = pclose(p);
  return out;
}

TEST(Capabilities, TracerWithoutBpfCapabilitiesReportsMissingProbes) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop capabilities with capsh";
  ASSERT_EQ(access("/usr/sbin/capsh", X_OK), 0) << "capsh (libcap2-bin) is required";
  const fs::path dir = fs::temp_directory_path() / ("mltap-caps-" + std::to_string(getpid()));
  fs::create_directories(dir / "models");
  const fs::path cfg = dir / "mltapd.yaml";
  std::ofstream(cfg) << "ebpf:\n  probes: {file_syscalls: true}\n  files:\n    watch_dirs: [" << (dir / "models").string() << "]\n";
  int status = 0;
  const std::string out = run(std::string("/usr/sbin/capsh --drop=cap_bpf,cap_perfmon,cap_sys_admin -- -c '") +
                                  MLTAP_EBPF_PROBE + " " + cfg.string() + "' 2>/dev/null",
                              status);
  fs::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the tracer must not fail: " << out;
  const auto j = nlohmann::json::parse(out);
  for (const auto& c : j["capabilities_before"]) {
    EXPECT_NE(c, "CAP_BPF");
    EXPECT_NE(c, "CAP_SYS_ADMIN");
  }
  int bpf_probes = 0;
  for (const auto& p : j["probes"]) {
    const std::string name = p["probe"];
    const std::string reason = p["reason"];
    if (name == "file_watch") {
      // Unprivileged fanotify works on Linux >= 5.13 but hides other processes' pids.
      if (p["up"].get<bool>()) EXPECT_NE(reason.find("CAP_SYS_ADMIN"), std::string::npos) << reason;
      else EXPECT_NE(reason.find("fanotify"), std::string::npos) << reason;
      continue;
    }
    ++bpf_probes;
    EXPECT_FALSE(p["up"].get<bool>()) << name;
    EXPECT_NE(reason.find("CAP_BPF"), std::string::npos) << name << ": " << reason;
  }
  EXPECT_EQ(bpf_probes, 10);
}

// Runs in a forked child so that this test process keeps its capabilities.
TEST(Capabilities, DropInEveryThreadThenKeepTracing) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    std::string msg;
    auto say = [&](const std::string& m) { msg += m + "\n"; };
    int rc = 0;
    {
      TracerConfig cfg;
      cfg.probes[static_cast<std::size_t>(Probe::file_watch)] = false;
      EventLog log;
      Tracer t(cfg);
      t.start(log.callback());
      std::atomic<bool> done{false};
      std::vector<std::thread> threads;
      for (int i = 0; i < 3; ++i) {
        threads.emplace_back([&] {
          while (!done) std::this_thread::sleep_for(1ms);
        });
      }
      CapabilityDropOptions opts;
      opts.keep = t.capabilities_needed_after_start();
      opts.keep.push_back("cap_kill");
      const auto r = drop_capabilities(opts);
#if defined(__SANITIZE_THREAD__)
      // ThreadSanitizer's runtime threads block every signal: they are reported, not dropped.
      const bool sanitizer_threads = true;
#else
      const bool sanitizer_threads = false;
#endif
      std::size_t runtime_threads = 0;
      for (int tid : r.unreachable_threads) {
        auto blk = proc::read_cap_mask("/proc/self/task/" + std::to_string(tid) + "/status", "SigBlk");
        if (sanitizer_threads && blk && __builtin_popcountll(*blk) >= 60) ++runtime_threads;
      }
      if (r.unreachable_threads.size() != runtime_threads) {
        std::string names;
        for (int tid : r.unreachable_threads) {
          std::ifstream comm("/proc/self/task/" + std::to_string(tid) + "/comm");
          std::string n;
          std::getline(comm, n);
          std::ifstream wchan("/proc/self/task/" + std::to_string(tid) + "/wchan");
          std::string w;
          std::getline(wchan, w);
          names += " " + std::to_string(tid) + "(" + n + ", " + w + ")";
        }
        say("unreachable threads:" + names + ": " + r.error);
        rc = 1;
      }
      if (r.unreachable_threads.empty() && !r.ok) {
        say("drop failed: " + r.error);
        rc = 1;
      }
      if (r.threads < 5) {  // main + tracer + 3
        say("only " + std::to_string(r.threads) + " threads verified");
        rc = 1;
      }
      const std::uint64_t kill_bit = std::uint64_t{1} << 5;  // CAP_KILL
      for (const auto& e : fs::directory_iterator("/proc/self/task")) {
        const int tid = std::atoi(e.path().filename().c_str());
        if (std::find(r.unreachable_threads.begin(), r.unreachable_threads.end(), tid) !=
            r.unreachable_threads.end()) {
          continue;
        }
        const std::string st = e.path().string() + "/status";
        for (const char* k : {"CapEff", "CapPrm", "CapBnd"}) {
          auto v = proc::read_cap_mask(st, k);
          if (!v || (*v & ~kill_bit) != 0) {
            say(std::string("thread ") + e.path().filename().string() + " still has " + k);
            rc = 1;
          }
        }
      }
      // Tracking after the drop: map updates through the fds held, events still flowing.
      Child c({"exec-exit", "7"});
      auto eff = proc::read_cap_mask("/proc/" + std::to_string(c.pid()) + "/status", "CapEff");
      if (!eff || *eff != 0) {
        say("a program started after the drop has capabilities (securebits not locked?)");
        rc = 1;
      }
      const auto tr = t.track(c.upid(), c.start_ticks(), "after-drop");
      if (tr != TrackResult::tracked) {
        say("track after drop: " + std::string(track_result_name(tr)));
        rc = 1;
      }
      c.go();
      c.wait();
      auto ev = log.wait_for([&](const SystemEvent& e) {
        return e.kind == EventKind::exit && e.root.pid == c.upid() && e.exit_code == 7;
      });
      if (!ev) {
        say("no exit event after the drop");
        rc = 1;
      }
      done = true;
      for (auto& th : threads) th.join();
    }
    (void)!write(fds[1], msg.data(), msg.size());
    close(fds[1]);
    _exit(rc);
  }
  close(fds[1]);
  std::string msg;
  char buf[1024];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) msg.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << msg;
}

TEST(Capabilities, UnknownNameDropsNothing) {
  CapabilityDropOptions opts;
  opts.keep = {"CAP_NOT_A_THING"};
  const auto before = effective_capabilities();
  const auto r = drop_capabilities(opts);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("CAP_NOT_A_THING"), std::string::npos);
  EXPECT_EQ(effective_capabilities(), before);
}

}  // namespace
}  // namespace mltap::bpf::test
