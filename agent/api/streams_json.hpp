// JSON views of the ingest snapshot for GET /api/v1/streams (and `mltap status`).
#pragma once

#include <nlohmann/json.hpp>

#include "ingest/ingest.hpp"

namespace mltap::api {

nlohmann::json streams_to_json(const ingest::IngestSnapshot& snap);

}  // namespace mltap::api
