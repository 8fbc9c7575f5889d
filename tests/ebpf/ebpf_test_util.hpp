// Helpers for the eBPF tests: real child processes (mltap_ebpf_test_child) that wait for "go"
// on stdin, and a thread-safe log of delivered events with timed waits.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bpf/src/proc.hpp"
#include "bpf/tracer.hpp"
#include "core/system_event.hpp"

extern char** environ;

namespace mltap::bpf::test {

using core::EventKind;
using core::SystemEvent;

inline std::uint64_t start_ticks_of(pid_t pid) {
  auto st = naming::read_proc_stat(static_cast<std::uint32_t>(pid), "/proc");
  return st ? st->start_ticks : 0;
}

class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int fds[2], ready[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    if (pipe2(ready, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[0], 0);
    posix_spawn_file_actions_adddup2(&fa, ready[1], 3);
    std::vector<char*> argv;
    args.insert(args.begin(), MLTAP_TEST_CHILD);
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t p = -1;
    if (posix_spawn(&p, MLTAP_TEST_CHILD, &fa, nullptr, argv.data(), environ) == 0) pid_ = p;
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[0]);
    ::close(ready[1]);
    go_fd_ = fds[1];
    // The exec has finished (and been traced) once the child says so: tracking it from now
    // on reports only what it does next.
    pollfd pf{ready[0], POLLIN, 0};
    char b;
    if (pid_ > 0 && poll(&pf, 1, 10000) == 1) (void)!::read(ready[0], &b, 1);
    ::close(ready[0]);
    if (pid_ > 0) start_ticks_ = start_ticks_of(pid_);
  }
  ~Child() {
    if (go_fd_ >= 0) ::close(go_fd_);
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  std::uint32_t upid() const { return static_cast<std::uint32_t>(pid_); }
  std::uint64_t start_ticks() const { return start_ticks_; }
  void go() {
    if (go_fd_ < 0) return;
    (void)!::write(go_fd_, "go\n", 3);
    ::close(go_fd_);
    go_fd_ = -1;
  }
  // waitpid status, or -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      int st = 0;
      const pid_t r = waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        return st;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int go_fd_ = -1;
  std::uint64_t start_ticks_ = 0;
  bool reaped_ = false;
};

class EventLog {
 public:
  Tracer::EventCallback callback() {
    return [this](const SystemEvent& e) {
      std::lock_guard lk(mu_);
      events_.push_back(e);
      cv_.notify_all();
    };
  }
  std::optional<SystemEvent> wait_for(const std::function<bool(const SystemEvent&)>& pred,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lk(mu_);
    std::optional<SystemEvent> found;
    cv_.wait_for(lk, timeout, [&] {
      for (const auto& e : events_) {
        if (pred(e)) {
          found = e;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::vector<SystemEvent> matching(const std::function<bool(const SystemEvent&)>& pred) {
    std::lock_guard lk(mu_);
    std::vector<SystemEvent> out;
    for (const auto& e : events_) {
      if (pred(e)) out.push_back(e);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SystemEvent> events_;
};

// Any event about `pid`, as subject, other side, or owner of the tree.
inline bool involves(const SystemEvent& e, std::uint32_t pid) {
  return e.subject.pid == pid || e.other.pid == pid || e.root.pid == pid;
}

}  // namespace mltap::bpf::test
