// JSON forms of findings and snapshots (served by mltapd at /api/v1/findings, printed by
// `mltap drift --json`). NaN becomes null; times are unix nanoseconds.
#pragma once

#include <nlohmann/json.hpp>

#include "detectors/engine.hpp"
#include "detectors/finding.hpp"

namespace mltap::detect {

nlohmann::json to_json(const FeatureEffect& e);
nlohmann::json to_json(const Finding& f);
nlohmann::json to_json(const FeatureResult& r);
nlohmann::json to_json(const StreamSnapshot& s);
nlohmann::json to_json(const EngineSnapshot& s);

}  // namespace mltap::detect
