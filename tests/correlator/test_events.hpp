// Builders of SystemEvents and Findings for the correlator tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "correlator/system_event.hpp"
#include "detectors/finding.hpp"
#include "ingest/batch.hpp"

namespace mltap::correlate::test {

inline constexpr std::uint64_t kT0 = 1'700'000'000'000'000'000ULL;  // a finding opens here
inline constexpr std::uint64_t kMin = 60'000'000'000ULL;
inline constexpr std::uint64_t kSec = 1'000'000'000ULL;

inline ProcessRef proc(std::uint32_t pid, std::uint64_t ticks, std::string comm = "python3") {
  ProcessRef p;
  p.pid = pid;
  p.tid = pid;
  p.start_ticks = ticks;
  p.comm = std::move(comm);
  return p;
}

// An event of a tracked process `subject` whose tree is owned by `root`.
inline SystemEvent tracked(EventKind k, std::uint64_t unix_ns, ProcessRef subject, ProcessRef root,
                           std::string component = "inference") {
  SystemEvent e;
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

inline SystemEvent host(EventKind k, std::uint64_t unix_ns, ProcessRef subject) {
  SystemEvent e;
  e.kind = k;
  e.unix_ns = unix_ns;
  e.subject = std::move(subject);
  e.tracked = false;
  e.source = "fanotify";
  return e;
}

inline detect::Finding finding(detect::FindingKind k, std::uint64_t opened = kT0,
                               std::string stream = "scores", std::string component = "inference") {
  detect::Finding f;
  f.id = 7;
  f.stream = std::move(stream);
  f.component = std::move(component);
  f.kind = k;
  f.severity = detect::Severity::critical;
  f.opened_unix_ns = opened;
  f.updated_unix_ns = opened;
  f.summary = "PSI 0.42 on 3 features";
  f.reason = "psi";
  return f;
}

}  // namespace mltap::correlate::test
