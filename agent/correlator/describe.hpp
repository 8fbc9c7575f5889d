// Text forms of system events for people: one line per event ("train.py (pid 12) was killed by
// SIGKILL"), durations, signal and errno names. Used by the correlator's "why" sentences, the
// related events pushed to Alertmanager, the events API and `mltap explain`.
#pragma once

#include <cstdint>
#include <string>

#include "core/system_event.hpp"

namespace mltap::correlator {

// One line a human reads: "train.py (pid 12) was killed by SIGKILL".
std::string describe(const core::SystemEvent& e);
// "350 ms", "12 s", "4m05s", "2h10m".
std::string format_duration(std::uint64_t ns);
std::string signal_name(int sig);  // "SIGKILL"; "signal 77" when unknown
std::string errno_name(int err);   // "ECONNREFUSED"; "error 999" when unknown

}  // namespace mltap::correlator
