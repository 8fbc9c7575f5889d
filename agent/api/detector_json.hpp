// JSON forms of findings and the detector snapshot (served by mltapd at /api/v1/findings and
// /api/v1/detectors, printed by `mltap drift --json`). NaN becomes null; times are unix nanoseconds.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "core/detector_state.hpp"
#include "core/finding.hpp"

namespace mltap::api {

nlohmann::json to_json(const core::FeatureEffect& e);
nlohmann::json to_json(const core::Finding& f);
nlohmann::json to_json(const core::FeatureResult& r);
nlohmann::json to_json(const core::DetectorStreamSnapshot& s);
nlohmann::json to_json(const core::DetectorSnapshot& s);

}  // namespace mltap::api
