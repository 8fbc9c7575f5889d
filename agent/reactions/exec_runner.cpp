#include "agent/reactions/exec_runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include "core/pidfd.hpp"
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace mltap::reactions {

using Clock = std::chrono::steady_clock;

struct ExecRunner::Job {
  pid_t pid = 0;
  int pidfd = -1;
  int out_fd = -1;
  std::uint64_t max_output = 0;
  std::chrono::nanoseconds kill_grace{0};
  ExecDone done;
  Clock::time_point started;
  Clock::time_point deadline;
  Clock::time_point kill_at{};
  bool term_sent = false;
  bool kill_sent = false;
  bool timed_out = false;
  bool shutdown = false;
  ExecResult result;

  // Reads what the pipe holds now (bounded per call, so a program writing without pause cannot
  // keep the monitor here); closes it at EOF.
  void drain() {
    char buf[4096];
    for (int reads = 0; out_fd >= 0 && reads < 64; ++reads) {
      const ssize_t n = ::read(out_fd, buf, sizeof buf);
      if (n > 0) {
        result.output_bytes += static_cast<std::uint64_t>(n);
        const std::uint64_t room = max_output > result.output.size() ? max_output - result.output.size() : 0;
        const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(room, static_cast<std::uint64_t>(n)));
        result.output.append(buf, take);
        if (take < static_cast<std::size_t>(n)) result.output_truncated = true;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      ::close(out_fd);  // EOF or error
      out_fd = -1;
    }
  }

  void signal_group(int sig) const noexcept {
    // The group id is the child's pid; the child is not reaped yet, so the id cannot be reused.
    ::kill(-pid, sig);
  }
};

namespace {

struct CStrings {
  std::vector<std::string> storage;
  std::vector<char*> ptrs;
  explicit CStrings(const std::vector<std::string>& v) : storage(v) {
    for (auto& s : storage) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
};

}  // namespace

ExecRunner::ExecRunner(std::uint32_t max_concurrent) : max_concurrent_(max_concurrent) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::runtime_error(std::string("exec runner: eventfd: ") + std::strerror(errno));
  thread_ = std::thread([this] { monitor(); });
}

ExecRunner::~ExecRunner() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake();
  if (thread_.joinable()) thread_.join();
  ::close(wake_fd_);
}

void ExecRunner::wake() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

std::uint32_t ExecRunner::running() const {
  std::lock_guard lock(mu_);
  return static_cast<std::uint32_t>(jobs_.size());
}

bool ExecRunner::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return jobs_.empty() && finishing_ == 0; });
}

ExecRunner::Start ExecRunner::start(ExecRequest req, ExecDone done, std::string* error) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      *error = "mltapd is stopping";
      return Start::busy;
    }
    if (jobs_.size() >= max_concurrent_) {
      *error = std::to_string(jobs_.size()) + " reaction programs already running (max_concurrent_exec)";
      return Start::busy;
    }
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    *error = std::string("pipe: ") + std::strerror(errno);
    return Start::spawn_failed;
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  // Executed through the descriptor: fd 3 in the child (dup2 clears close-on-exec, so a script's
  // interpreter can open /proc/self/fd/3 too), and /proc/self/fd/3 names the opened inode itself,
  // not a path looked up again, so a file swapped in after the check is not what runs.
  std::string exec_path = req.path;
  if (req.program_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, req.program_fd, 3);
    posix_spawn_file_actions_addclosefrom_np(&actions, 4);
    exec_path = "/proc/self/fd/3";
  } else {
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  }
  posix_spawn_file_actions_addchdir_np(&actions, req.working_dir.c_str());
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);  // own process group: timeouts kill all of it
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  CStrings argv(req.argv), envp(req.env);
  pid_t pid = 0;
  const auto started = Clock::now();
  const int rc = ::posix_spawn(&pid, exec_path.c_str(), &actions, &attr, argv.ptrs.data(), envp.ptrs.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    *error = "cannot start '" + req.path + "': " + std::strerror(rc);
    return Start::spawn_failed;
  }
  const int pidfd = core::sys::pidfd_open(pid, 0);
  if (pidfd < 0) {
    const int err = errno;
    ::kill(-pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(pipe_fds[0]);
    *error = std::string("pidfd_open: ") + std::strerror(err);
    return Start::spawn_failed;
  }
  ::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);

  Job job;
  job.pid = pid;
  job.pidfd = pidfd;
  job.out_fd = pipe_fds[0];
  job.max_output = req.max_output_bytes;
  job.kill_grace = req.kill_grace;
  job.done = std::move(done);
  job.started = started;
  job.deadline = started + req.timeout;
  job.result.pid = pid;
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
    // A stop that raced with us: the monitor kills the new job on its next pass.
  }
  wake();
  return Start::started;
}

void ExecRunner::monitor() {
  std::vector<pollfd> fds;
  std::vector<Job*> owners;  // owner of fds[i] (nullptr for the wake fd)
  for (;;) {
    std::vector<Job> finished;
    int timeout_ms = -1;
    {
      std::unique_lock lock(mu_);
      const auto now = Clock::now();
      for (auto it = jobs_.begin(); it != jobs_.end();) {
        Job& j = *it;
        if (stopping_ && !j.kill_sent) {
          j.shutdown = true;
          j.signal_group(SIGKILL);
          j.kill_sent = true;
        }
        if (!j.term_sent && now >= j.deadline) {
          j.timed_out = true;
          j.term_sent = true;
          if (j.kill_grace.count() > 0) {
            j.signal_group(SIGTERM);
            j.kill_at = now + j.kill_grace;
          } else {
            j.signal_group(SIGKILL);
            j.kill_sent = true;
          }
        }
        if (j.term_sent && !j.kill_sent && now >= j.kill_at) {
          j.signal_group(SIGKILL);
          j.kill_sent = true;
        }
        // Has the program ended? (pidfd is readable once it is a zombie.)
        pollfd p{j.pidfd, POLLIN, 0};
        if (::poll(&p, 1, 0) > 0) {
          j.signal_group(SIGKILL);  // leftovers in its group; the zombie still holds the id
          j.drain();
          if (j.out_fd >= 0) {
            ::close(j.out_fd);
            j.out_fd = -1;
          }
          int status = 0;
          while (::waitpid(j.pid, &status, 0) < 0 && errno == EINTR) {
          }
          ::close(j.pidfd);
          j.pidfd = -1;
          j.result.duration = Clock::now() - j.started;
          if (WIFEXITED(status)) {
            j.result.exit_code = WEXITSTATUS(status);
            j.result.outcome = ExecOutcome::exited;
          } else if (WIFSIGNALED(status)) {
            j.result.term_signal = WTERMSIG(status);
            j.result.outcome = ExecOutcome::killed_by_signal;
          }
          if (j.timed_out) j.result.outcome = ExecOutcome::timed_out;
          if (j.shutdown) j.result.outcome = ExecOutcome::shutdown;
          finished.push_back(std::move(j));
          it = jobs_.erase(it);
          continue;
        }
        ++it;
      }
      if (finished.empty() && stopping_ && jobs_.empty()) return;
      // Poll set for the next wait and the nearest deadline.
      fds.clear();
      owners.clear();
      fds.push_back({wake_fd_, POLLIN, 0});
      owners.push_back(nullptr);
      auto next = Clock::time_point::max();
      for (Job& j : jobs_) {
        fds.push_back({j.pidfd, POLLIN, 0});
        owners.push_back(nullptr);
        if (j.out_fd >= 0) {
          fds.push_back({j.out_fd, POLLIN, 0});
          owners.push_back(&j);
        }
        if (!j.term_sent) next = std::min(next, j.deadline);
        else if (!j.kill_sent) next = std::min(next, j.kill_at);
      }
      if (next != Clock::time_point::max()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
        timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, 60'000));
      }
      finishing_ += finished.size();
    }
    for (auto& r : finished) {
      if (r.done) r.done(std::move(r.result));
    }
    if (!finished.empty()) {
      std::lock_guard lock(mu_);
      finishing_ -= finished.size();
      if (jobs_.empty() && finishing_ == 0) idle_cv_.notify_all();
      continue;  // re-evaluate before sleeping
    }
    const int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n <= 0) continue;
    if (fds[0].revents & POLLIN) {
      std::uint64_t v;
      [[maybe_unused]] const ssize_t r = ::read(wake_fd_, &v, sizeof v);
    }
    std::lock_guard lock(mu_);
    for (std::size_t i = 1; i < fds.size(); ++i) {
      // Jobs are only removed by this thread, so the pointers are still valid.
      if (owners[i] && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) owners[i]->drain();
    }
  }
}

}  // namespace mltap::reactions
