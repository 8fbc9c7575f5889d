// A finding as a state document stores it (JSON): shared by every component that checkpoints its
// open findings (the detectors' stream documents, the performance findings), so that they keep
// their ids and onsets across restarts the same way. Not the API's JSON (agent/api), which
// carries more for people and less for restoring.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "core/finding.hpp"

namespace mltap::core {

nlohmann::json finding_state_json(const Finding& f);

// Throws nlohmann::json::exception (missing keys, type errors) or std::invalid_argument (id 0,
// unknown kind or severity) on a malformed document. A document without onset fields (written
// before onsets existed) loads with the onset unknown.
Finding finding_from_state_json(const nlohmann::json& j, const std::string& stream, const std::string& component);

}  // namespace mltap::core
