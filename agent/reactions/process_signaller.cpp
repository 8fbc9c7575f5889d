#include "agent/reactions/process_signaller.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "agent/reactions/pidfd.hpp"
#include "mltap/naming.hpp"

namespace mltap::reactions {

SignalReport ProcessSignaller::send(const std::vector<core::ProducerId>& producers,
                                    int signal) const {
  SignalReport r;
  const auto self = static_cast<std::uint32_t>(::getpid());
  std::ostringstream detail;
  for (const auto& p : producers) {
    if (p.pid <= 1 || p.pid == self) {
      ++r.refused;
      detail << "pid " << p.pid << " refused; ";
      continue;
    }
    const int pidfd = sys::pidfd_open(static_cast<pid_t>(p.pid), 0);
    if (pidfd < 0) {
      ++r.gone;
      detail << "pid " << p.pid << " gone; ";
      continue;
    }
    // Checked after opening the pidfd: if the start time matches now, the pidfd refers to that
    // process (or to one that has died since, which pidfd_send_signal then refuses).
    const auto ticks = naming::process_start_ticks(p.pid, proc_root_);
    if (!ticks || *ticks != p.start_ticks) {
      ::close(pidfd);
      ++r.gone;
      detail << "pid " << p.pid << " reused or gone (start ticks "
             << (ticks ? std::to_string(*ticks) : std::string("unknown")) << " != " << p.start_ticks
             << "); ";
      continue;
    }
    if (sys::pidfd_send_signal(pidfd, signal, nullptr, 0) == 0) {
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

}  // namespace mltap::reactions
