// Sends a signal to producer processes identified by (pid, start ticks), never to a process that
// merely reuses the pid: the start time in <proc_root>/<pid>/stat must match, and the signal goes
// through a pidfd opened before that check, so a pid recycled in between is never signalled.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/batch.hpp"

namespace mltap::reactions {

struct SignalReport {
  std::uint32_t signalled = 0;
  std::uint32_t gone = 0;      // no such process, or the pid now belongs to another process
  std::uint32_t refused = 0;   // pid 0/1 or mltapd itself
  std::uint32_t failed = 0;    // pidfd_send_signal failed (e.g. EPERM)
  std::string detail;          // human text for the audit log
};

class ProcessSignaller {
 public:
  explicit ProcessSignaller(std::string proc_root = "/proc") : proc_root_(std::move(proc_root)) {}
  SignalReport send(const std::vector<core::ProducerId>& producers, int signal) const;

 private:
  std::string proc_root_;
};

}  // namespace mltap::reactions
