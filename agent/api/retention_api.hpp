// Routes over the retained samples (agent/retention; docs/lineage.md):
//   GET  /api/v1/trace/<id>                      the id's retained rows in every stream
//   GET  /api/v1/review?stream=S[&since=24h][&until=][&labels=L][&threshold=0.5][&max_ids=]
//                                                upstream streams and features ranked by how
//                                                abnormal they were for the wrong predictions
//   GET  /api/v1/retained?stream=S[&since=][&until=][&limit=]   a stream's retained rows
//                                                (mltap backfill)
//   GET  /api/v1/retention                       what the store holds and dropped
//   POST /api/v1/flag  {"stream": S, "trace_ids": [...]}   marks predictions wrong: a state
//                      change, so it takes the webhook's bearer token (webhook.token_file)
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "agent/api/http_server.hpp"
#include "agent/retention/review.hpp"
#include "agent/retention/store.hpp"
#include "exporters/webhook/webhook_receiver.hpp"

namespace mltap::api {

struct RetentionApi {
  retention::RetentionStore* store = nullptr;  // null: retention disabled (the routes say so)
  retention::ReferenceLookup reference;        // the detectors' references (may be empty)
  // What the agent's configuration says of a predictions stream (labels stream, task,
  // threshold), filled into a request before its parameters; may be empty.
  std::function<void(retention::ReviewRequest&)> review_defaults;
  const webhook::WebhookReceiver* webhook = nullptr;  // null: POST /api/v1/flag answers 503
};

void register_retention_routes(HttpServer& server, RetentionApi api);

nlohmann::json to_json(const retention::ReviewResult& r);

// The stream's retained rows in [since, until) (unix ns), oldest first, at most `limit`, as
// GET /api/v1/retained answers them; null when the store holds none of the stream.
nlohmann::json retained_json(const retention::RetentionStore& store, const std::string& stream,
                             std::uint64_t since, std::uint64_t until, std::uint64_t limit);

}  // namespace mltap::api
