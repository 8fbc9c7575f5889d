// What reactions may do to a stream's producers. Implemented by the ingest layer (which owns the
// mapped segments and knows each stream's producer processes); reactions only see this interface.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/batch.hpp"

namespace mltap::core {

// Result of a control action: ok, or a human-readable error naming what failed.
struct ControlResult {
  bool ok = false;
  std::string error;
  std::uint32_t producers_affected = 0;
};

// Recent raw records of a stream, as copied from its rings (for incident bundles).
struct RetainedRecord {
  ProducerId producer;
  std::uint64_t seq = 0;
  std::uint64_t timestamp_ns = 0;
  std::string dtype;
  std::vector<std::uint32_t> row_shape;
  std::uint32_t rows = 0;
  std::vector<std::uint64_t> trace_ids;
  std::vector<std::uint8_t> payload;  // raw little-endian bytes as written
};

// What a signal to a stream's producers did.
struct SignalReport {
  std::uint32_t signalled = 0;
  std::uint32_t gone = 0;      // exited since it was verified
  std::uint32_t refused = 0;   // pid 0/1 or mltapd itself
  std::uint32_t failed = 0;    // pidfd_send_signal failed (e.g. EPERM)
  std::string detail;          // human text for the audit log
};

class ControlPlane {
 public:
  virtual ~ControlPlane() = default;
  // Live producer processes of `stream` (empty if unknown).
  virtual std::vector<ProducerId> producers(const std::string& stream) const = 0;
  // Sets a named flag in the control block of every live segment of `stream`. Producers read it
  // with stream.flag(name). Flag names: [A-Za-z0-9_.-]{1,31}.
  virtual ControlResult set_flag(const std::string& stream, const std::string& flag,
                                 std::uint32_t value) = 0;
  // Asks the stream's producers to keep at least `permille`/1000 of rows until `until_unix_ns`
  // (0 permille clears the boost).
  virtual ControlResult boost_sampling(const std::string& stream, std::uint32_t permille,
                                       std::uint64_t until_unix_ns) = 0;
  // Sends `signal` to the live, verified producers of `stream` through the pidfds taken when
  // each was verified (docs/security.md): never by pid, never to a process whose segment the
  // kernel did not vouch for.
  virtual SignalReport signal_producers(const std::string& stream, int signal) = 0;
  // Up to `max_records` most recent records still in the stream's rings, newest last, at most
  // `max_bytes` of payload in total.
  virtual std::vector<RetainedRecord> recent_records(const std::string& stream,
                                                     std::size_t max_records,
                                                     std::size_t max_bytes) const = 0;
};

}  // namespace mltap::core
