// Dropping privileges once everything that needs them has started (ebpf_exporter's model).
// Capabilities are per thread in Linux: this applies the drop to every thread of the process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mltap::bpf {

struct CapabilityDropOptions {
  // Names as in capabilities(7), e.g. "CAP_KILL" or "cap_kill". Kept in the effective and
  // permitted sets; everything else is removed from effective, permitted, inheritable,
  // ambient and (when CAP_SETPCAP is still held) the bounding set.
  std::vector<std::string> keep;
  // Lock securebits so that uid 0 does not regain capabilities on execve (NOROOT,
  // NO_SETUID_FIXUP, KEEP_CAPS off, all locked). Programs the agent runs afterwards (reactions)
  // then start without capabilities even as root.
  bool lock_securebits = true;
  // Real-time signal used to reach the other threads (restored afterwards).
  int signal_offset_from_rtmin = 6;
};

struct CapabilityDropResult {
  bool ok = false;
  std::string error;                // first problem, when !ok
  std::vector<std::string> kept;    // capabilities still permitted afterwards
  std::size_t threads = 0;          // threads that were dropped and verified
  // Threads that block the signal, so their capabilities could not be dropped (e.g. a sanitizer
  // runtime's internal thread). Non-empty means !ok.
  std::vector<int> unreachable_threads;
  bool securebits_locked = false;
  bool bounding_set_cleared = false;
};

// Drops capabilities in every thread and verifies each through /proc/self/task/*/status.
// Unknown capability names are an error and nothing is dropped. Async-signal-safe work only
// runs in the other threads (raw prctl/capset system calls).
CapabilityDropResult drop_capabilities(const CapabilityDropOptions& options);

// Capability names in the calling thread's effective set (for logs and tests).
std::vector<std::string> effective_capabilities();

}  // namespace mltap::bpf
