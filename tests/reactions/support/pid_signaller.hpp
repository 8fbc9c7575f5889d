// The test ControlPlane's signal: to the producers a test registered by (pid, start ticks), through
// a pidfd opened before the start time is checked, so a recycled pid is never signalled. (The real
// ControlPlane, agent/ingest, signals through pidfds taken when it verified each producer's
// segment; reactions never see pids.)
#pragma once

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/control_plane.hpp"
#include "mltap/naming.hpp"

namespace mltap::testing {

inline core::SignalReport signal_by_pid(const std::vector<core::ProducerId>& producers, int signal) {
  core::SignalReport r;
  const auto self = static_cast<std::uint32_t>(::getpid());
  std::ostringstream detail;
  for (const auto& p : producers) {
    if (p.pid <= 1 || p.pid == self) {
      ++r.refused;
      detail << "pid " << p.pid << " refused; ";
      continue;
    }
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(p.pid), 0u));
    if (pidfd < 0) {
      ++r.gone;
      detail << "pid " << p.pid << " gone; ";
      continue;
    }
    const auto ticks = naming::process_start_ticks(p.pid, "/proc");
    if (!ticks || *ticks != p.start_ticks) {
      ::close(pidfd);
      ++r.gone;
      detail << "pid " << p.pid << " reused or gone; ";
      continue;
    }
    if (::syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0u) == 0) {
      ++r.signalled;
      detail << "pid " << p.pid << " signalled; ";
    } else if (errno == ESRCH) {
      ++r.gone;
      detail << "pid " << p.pid << " exited; ";
    } else {
      ++r.failed;
      detail << "pid " << p.pid << ": " << std::strerror(errno) << "; ";
    }
    ::close(pidfd);
  }
  r.detail = detail.str();
  if (r.detail.size() >= 2) r.detail.resize(r.detail.size() - 2);
  return r;
}

}  // namespace mltap::testing
