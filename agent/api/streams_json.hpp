// JSON views of the ingest snapshot for GET /api/v1/streams (and `mltap status`).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "core/ingest_state.hpp"

namespace mltap::api {

nlohmann::json streams_to_json(const core::IngestSnapshot& snap);

}  // namespace mltap::api
