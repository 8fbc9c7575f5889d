// The test ControlPlane signals (support/pid_signaller.hpp) reach a real child process only when
// pid and start ticks both match, like the real one (whose pidfds come from the producer trust
// check: tests/trust).
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include "support/pid_signaller.hpp"
#include "mltap/naming.hpp"
#include "support/test_util.hpp"

extern char** environ;

namespace mltap::reactions {
namespace {

using namespace std::chrono_literals;

// A real child waiting for SIGUSR1; killed and reaped on destruction.
class WaitingChild {
 public:
  explicit WaitingChild(const testing::TempDir& dir) : ready_(dir.file("ready")), out_(dir.file("out")) {
    std::vector<std::string> args = {REACTION_PROBE, "wait-signal", ready_, out_};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, REACTION_PROBE, nullptr, nullptr, argv.data(), environ) != 0) pid_ = 0;
  }
  ~WaitingChild() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
    }
  }
  bool wait_ready() const { return testing::wait_until([&] { return std::filesystem::exists(ready_); }, 10s); }
  // Exit status once it ended by itself; -1 if it is still running after `timeout`.
  int wait_exit(std::chrono::milliseconds timeout) {
    int status = 0;
    const bool done = testing::wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
    if (!done) return -1;
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_t pid() const { return pid_; }
  const std::string& out() const { return out_; }

 private:
  std::string ready_, out_;
  pid_t pid_ = 0;
};

TEST(TestControlPlaneSignal, SignalsAVerifiedProducer) {
  testing::TempDir dir;
  WaitingChild child(dir);
  ASSERT_GT(child.pid(), 0);
  ASSERT_TRUE(child.wait_ready());
  const auto ticks = naming::process_start_ticks(static_cast<std::uint32_t>(child.pid()), "/proc");
  ASSERT_TRUE(ticks);
  const core::SignalReport r = testing::signal_by_pid({{static_cast<std::uint32_t>(child.pid()), *ticks}}, SIGUSR1);
  EXPECT_EQ(r.signalled, 1u) << r.detail;
  EXPECT_EQ(child.wait_exit(10s), 0);
  EXPECT_EQ(testing::read_file(child.out()), "USR1\n");
}

TEST(TestControlPlaneSignal, SkipsAProcessWhoseStartTimeDiffers) {
  testing::TempDir dir;
  WaitingChild child(dir);
  ASSERT_TRUE(child.wait_ready());
  const auto ticks = naming::process_start_ticks(static_cast<std::uint32_t>(child.pid()), "/proc");
  ASSERT_TRUE(ticks);
  // Same pid, other start time: the producer we knew is gone and the pid was reused.
  const core::SignalReport r = testing::signal_by_pid({{static_cast<std::uint32_t>(child.pid()), *ticks + 1}}, SIGUSR1);
  EXPECT_EQ(r.signalled, 0u);
  EXPECT_EQ(r.gone, 1u);
  EXPECT_NE(r.detail.find("reused or gone"), std::string::npos) << r.detail;
  EXPECT_EQ(child.wait_exit(300ms), -1) << "the child must not have been signalled";
  EXPECT_FALSE(std::filesystem::exists(child.out()));
}

TEST(TestControlPlaneSignal, RefusesInitAndItself) {
  const auto self_ticks = naming::process_start_ticks(static_cast<std::uint32_t>(::getpid()), "/proc");
  ASSERT_TRUE(self_ticks);
  const core::SignalReport r = testing::signal_by_pid({{1, 0}, {0, 0}, {static_cast<std::uint32_t>(::getpid()), *self_ticks}}, SIGUSR1);
  EXPECT_EQ(r.refused, 3u);
  EXPECT_EQ(r.signalled, 0u);
}

TEST(TestControlPlaneSignal, ReportsExitedProcesses) {
  // A pid far above pid_max's default is never in use.
  const core::SignalReport r = testing::signal_by_pid({{4000000, 1}}, SIGUSR1);
  EXPECT_EQ(r.gone, 1u);
}

TEST(StartTicks, ParsesFixtureStatWithHostileComm) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() / "4242");
  // comm may contain spaces and ") (": fields are counted after the last ')'.
  testing::write_file(dir.file("4242/stat"),
                      "4242 (evil) (name 1 2) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
                      "987654 1000000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
                      0644);
  EXPECT_EQ(naming::process_start_ticks(4242, dir.path().string()), 987654u);
  testing::write_file(dir.file("4242/stat"), "4242 (short) S 1 2\n", 0644);
  EXPECT_FALSE(naming::process_start_ticks(4242, dir.path().string()));
  testing::write_file(dir.file("4242/stat"), "garbage without parenthesis\n", 0644);
  EXPECT_FALSE(naming::process_start_ticks(4242, dir.path().string()));
  EXPECT_FALSE(naming::process_start_ticks(4243, dir.path().string()));
}

}  // namespace
}  // namespace mltap::reactions
