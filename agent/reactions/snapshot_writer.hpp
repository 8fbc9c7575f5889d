// Incident bundles: a directory per incident holding the stream's recent raw records (from the
// ring, through ControlPlane::recent_records), the detector state, the finding and the event
// timeline (from injectable providers), and a manifest. A bundle is written under a temporary name
// and renamed into place, so readers never see half a bundle. Old bundles are removed, oldest
// first, beyond max_bundles or max_total_bytes; only directories named like bundles are touched.
//
// Layout of <directory>/<UTC time>-<seq>-<reaction>/:
//   manifest.json        format, alert, stream, files and sizes, truncations, provider errors
//   records.jsonl        one line per record: producer, seq, timestamp, dtype, shape, rows,
//                        trace ids, offset/bytes of its payload in records.bin
//   records.bin          the payloads, concatenated, as the producer wrote them (little-endian)
//   detector_state.json  finding.json  timeline.json   (when a provider is configured)
//   retained.json        the stream's retained samples of the last minutes (agent/retention):
//                        rows beyond the ring's reach, with trace ids for `mltap trace`
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "agent/reactions/reaction_config.hpp"
#include "core/alert.hpp"
#include "core/control_plane.hpp"

namespace mltap::reactions {

// Returns a JSON document about `stream` for the alert; called on the reaction worker thread.
using JsonProvider = std::function<nlohmann::json(const std::string& stream, const core::AlertEvent& alert)>;

struct SnapshotProviders {
  JsonProvider detector_state;  // the stream's detectors (windows, references, statistics)
  JsonProvider finding;         // the open finding(s) of the stream, as /api/v1/findings shows them
  JsonProvider timeline;        // the correlator's events around the finding
  JsonProvider retained;        // the stream's retained rows before the alert (agent/retention)
};

struct SnapshotResult {
  bool ok = false;
  std::string bundle;            // path of the bundle directory
  std::uint64_t bytes = 0;       // bytes written in the bundle
  std::uint32_t records = 0;
  std::uint32_t removed_bundles = 0;
  std::string error;
};

class SnapshotWriter {
 public:
  SnapshotWriter(SnapshotAction spec, std::string reaction);
  // Creates the directory if needed and removes temporaries of interrupted writes.
  // Returns an error message, empty on success.
  std::string prepare();
  SnapshotResult write(const core::AlertEvent& alert, const std::string& stream, core::ControlPlane& control,
                       const SnapshotProviders& providers);

 private:
  void enforce_limits(const std::string& keep, SnapshotResult& result) const;
  SnapshotAction spec_;
  std::string reaction_;
  std::uint64_t seq_ = 0;
};

// True for names the writer gives to finished bundles.
bool is_bundle_name(const std::string& name);

}  // namespace mltap::reactions
