// Builders of SystemEvents and Findings for the correlator tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/batch.hpp"
#include "core/finding.hpp"
#include "core/system_event.hpp"

namespace mltap::correlator::test {

inline constexpr std::uint64_t kT0 = 1'700'000'000'000'000'000ULL;  // a finding opens here
inline constexpr std::uint64_t kMin = 60'000'000'000ULL;
inline constexpr std::uint64_t kSec = 1'000'000'000ULL;

inline core::ProcessRef proc(std::uint32_t pid, std::uint64_t ticks, std::string comm = "python3") {
  core::ProcessRef p;
  p.pid = pid;
  p.tid = pid;
  p.start_ticks = ticks;
  p.comm = std::move(comm);
  return p;
}

// An event of a tracked process `subject` whose tree is owned by `root`.
inline core::SystemEvent tracked(core::EventKind k, std::uint64_t unix_ns, core::ProcessRef subject, core::ProcessRef root,
                           std::string component = "inference") {
  core::SystemEvent e;
  e.kind = k;
  e.unix_ns = unix_ns;
  e.boot_ns = unix_ns / 1000;
  e.subject = std::move(subject);
  e.root = std::move(root);
  e.tracked = true;
  e.component = std::move(component);
  e.source = "bpf:tp_btf";
  return e;
}

inline core::SystemEvent host(core::EventKind k, std::uint64_t unix_ns, core::ProcessRef subject) {
  core::SystemEvent e;
  e.kind = k;
  e.unix_ns = unix_ns;
  e.subject = std::move(subject);
  e.tracked = false;
  e.source = "fanotify";
  return e;
}

inline core::Finding finding(core::FindingKind k, std::uint64_t opened = kT0,
                               std::string stream = "scores", std::string component = "inference") {
  core::Finding f;
  f.id = 7;
  f.stream = std::move(stream);
  f.component = std::move(component);
  f.kind = k;
  f.severity = core::Severity::critical;
  f.opened_unix_ns = opened;
  f.updated_unix_ns = opened;
  f.summary = "PSI 0.42 on 3 features";
  f.reason = "psi";
  return f;
}

}  // namespace mltap::correlator::test
