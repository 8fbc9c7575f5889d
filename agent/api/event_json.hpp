// JSON forms of system events and related events: what GET /api/v1/events and the `related`
// field of GET /api/v1/findings return, and what `mltap explain` reads back.
#pragma once

#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agent/correlator/correlator.hpp"
#include "core/finding.hpp"
#include "core/system_event.hpp"

namespace mltap::api {

nlohmann::json to_json(const core::SystemEvent& e);
// Strict inverse of to_json: throws std::invalid_argument naming the bad field.
core::SystemEvent system_event_from_json(const nlohmann::json& j);

nlohmann::json to_json(const correlator::RelatedEvent& r);
nlohmann::json related_json(const std::vector<correlator::RelatedEvent>& related);
// The finding fields the events API and `mltap explain` use (same names as /api/v1/findings).
nlohmann::json finding_json(const core::Finding& f);

}  // namespace mltap::api
