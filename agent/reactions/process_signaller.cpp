#include "agent/reactions/process_signaller.hpp"

#include <signal.h>
#include "agent/reactions/pidfd.hpp"
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mltap::reactions {

std::optional<std::uint64_t> read_start_ticks(const std::string& proc_root, std::uint32_t pid) {
  std::ifstream in(proc_root + "/" + std::to_string(pid) + "/stat");
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line, '\0');
  if (line.size() > 4096) return std::nullopt;
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  for (int index = 3; index <= 22; ++index) {
    if (!(rest >> field)) return std::nullopt;
  }
  std::uint64_t ticks = 0;
  const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), ticks);
  if (ec != std::errc() || end != field.data() + field.size()) return std::nullopt;
  return ticks;
}

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
    const auto ticks = read_start_ticks(proc_root_, p.pid);
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
