// Runs reaction programs without a shell and without blocking the caller: each program starts in
// its own process group with a clean environment, stdin from /dev/null and stdout+stderr captured
// into a bounded buffer. One monitor thread watches every running program (pidfd + pipe) and
// enforces its timeout by signalling the whole group (SIGTERM, then SIGKILL after a grace
// period). When a program exits, whatever it left behind in its group is killed too.
//
// The agent must not set SIGCHLD to SIG_IGN nor reap children with waitpid(-1): the runner owns
// the children it starts.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace mltap::reactions {

struct ExecRequest {
  std::string path;               // absolute path of the program
  // When >= 0: the program is executed through this descriptor (an O_PATH descriptor opened and
  // checked before), not looked up by `path` again. The caller keeps it open until start returns.
  int program_fd = -1;
  std::vector<std::string> argv;  // complete argv, argv[0] included
  std::vector<std::string> env;   // complete environment, "NAME=value"
  std::string working_dir = "/";
  std::chrono::nanoseconds timeout{std::chrono::seconds(30)};
  std::chrono::nanoseconds kill_grace{std::chrono::seconds(2)};
  std::uint64_t max_output_bytes = 64 * 1024;
};

enum class ExecOutcome { exited, killed_by_signal, timed_out, spawn_failed, shutdown };

constexpr std::string_view exec_outcome_name(ExecOutcome o) noexcept {
  switch (o) {
    case ExecOutcome::exited: return "exited";
    case ExecOutcome::killed_by_signal: return "killed_by_signal";
    case ExecOutcome::timed_out: return "timed_out";
    case ExecOutcome::spawn_failed: return "spawn_failed";
    case ExecOutcome::shutdown: return "shutdown";
  }
  return "unknown";
}

struct ExecResult {
  ExecOutcome outcome = ExecOutcome::spawn_failed;
  int exit_code = -1;    // when outcome == exited
  int term_signal = 0;   // signal that ended it (killed_by_signal, timed_out)
  pid_t pid = 0;
  std::string output;    // first max_output_bytes of stdout+stderr
  std::uint64_t output_bytes = 0;  // all bytes the program wrote
  bool output_truncated = false;
  std::chrono::nanoseconds duration{0};
  std::string error;     // spawn failure
  bool ok() const noexcept { return outcome == ExecOutcome::exited && exit_code == 0; }
};

using ExecDone = std::function<void(ExecResult)>;

class ExecRunner {
 public:
  explicit ExecRunner(std::uint32_t max_concurrent);
  ~ExecRunner();  // kills every running program group and waits for them
  ExecRunner(const ExecRunner&) = delete;
  ExecRunner& operator=(const ExecRunner&) = delete;

  enum class Start { started, busy, spawn_failed };
  // Starts the program now and returns at once. `done` is called later on the monitor thread,
  // exactly once, unless the result is busy or spawn_failed (then `error` says why and `done`
  // is not called).
  Start start(ExecRequest request, ExecDone done, std::string* error);

  std::uint32_t running() const;
  // Blocks until no program runs or `timeout` passes; for tests and shutdown.
  bool wait_idle(std::chrono::milliseconds timeout) const;

 private:
  struct Job;
  void monitor();
  void wake() noexcept;

  const std::uint32_t max_concurrent_;
  int wake_fd_ = -1;  // eventfd
  mutable std::mutex mu_;
  mutable std::condition_variable idle_cv_;
  std::list<Job> jobs_;
  std::size_t finishing_ = 0;  // ended, `done` not yet returned
  bool stopping_ = false;
  std::thread thread_;
};


}  // namespace mltap::reactions
