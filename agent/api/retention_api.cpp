#include "agent/api/retention_api.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>

#include <nlohmann/json.hpp>

#include "agent/api/json_reply.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"

namespace mltap::api {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxFlagBody = 1 << 20;
constexpr std::size_t kMaxFlagIds = 10'000;

void reply(HttpResponse& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}


std::optional<std::uint64_t> parse_u64(const std::string& s) {
  std::uint64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// GET /api/v1/trace/<id>
void trace_route(const retention::RetentionStore& store, const HttpRequest& req,
                 HttpResponse& res) {
  const auto id = parse_u64(req.matches[1]);
  if (!id) return reply_json_error(res, 400, "trace id must be an unsigned 64-bit decimal number");
  json records = json::array();
  {
    const auto view = store.read();
    for (const auto* meta : view.streams()) {
      const auto row = view.find(meta->name, *id);
      if (!row) continue;
      json values = json::object();
      json raw = json::array();
      for (std::size_t j = 0; j < row->values.size(); ++j) {
        const std::string name =
            j < meta->feature_names.size() ? meta->feature_names[j] : "f" + std::to_string(j);
        values[name] = json_number_or_null(row->values[j]);
        raw.push_back(json_number_or_null(row->values[j]));
      }
      records.push_back(json{{"stream", meta->name},
                             {"component", meta->component},
                             {"kind", std::string(format::stream_kind_name(meta->kind))},
                             {"timestamp", core::format_utc(row->timestamp_ns)},
                             {"timestamp_unix_ns", row->timestamp_ns},
                             {"values", values},
                             {"flagged", view.flagged(meta->name, *id)}});
    }
  }
  std::sort(records.begin(), records.end(), [](const json& a, const json& b) {
    return a["timestamp_unix_ns"].get<std::uint64_t>() <
           b["timestamp_unix_ns"].get<std::uint64_t>();
  });
  const json body{{"trace_id", std::to_string(*id)}, {"records", records}};
  reply(res, records.empty() ? 404 : 200, body);
}

// GET /api/v1/review
void review_route(const RetentionApi& api, const HttpRequest& req, HttpResponse& res) {
  retention::ReviewRequest rq;
  rq.stream = req.param("stream");
  if (rq.stream.empty())
    return reply_json_error(res, 400, "parameter 'stream' (the predictions stream) is required");
  if (api.review_defaults) api.review_defaults(rq);
  const auto now = core::unix_now_ns();
  auto duration = [&](const char* name, std::uint64_t& out) -> bool {
    if (!req.has_param(name)) return true;
    const auto d = core::parse_duration(req.param(name));
    if (!d || d->count() < 0 || *d > std::chrono::hours(24 * 400)) return false;
    out = now - std::min<std::uint64_t>(now, static_cast<std::uint64_t>(d->count()));
    return true;
  };
  rq.since_unix_ns = now - std::min<std::uint64_t>(now, 24ull * 3600 * 1'000'000'000);
  if (!duration("since", rq.since_unix_ns))
    return reply_json_error(res, 400,
                       "parameter 'since' must be a duration such as 6h or 7d, at most 400d");
  if (req.has_param("until")) {
    rq.until_unix_ns = 0;
    if (!duration("until", rq.until_unix_ns))
      return reply_json_error(res, 400,
                         "parameter 'until' must be a duration (how long ago) such as 1h");
  }
  if (req.has_param("labels")) rq.labels_stream = req.param("labels");
  if (req.has_param("threshold")) {
    try {
      std::size_t used = 0;
      const std::string t = req.param("threshold");
      rq.threshold = std::stod(t, &used);
      if (used != t.size() || !(rq.threshold >= 0 && rq.threshold <= 1))
        throw std::invalid_argument(t);
    } catch (const std::exception&) {
      return reply_json_error(res, 400, "parameter 'threshold' must be a number in [0, 1]");
    }
  }
  if (req.has_param("max_ids")) {
    const auto n = parse_u64(req.param("max_ids"));
    if (!n || *n < 1 || *n > 1'000'000)
      return reply_json_error(res, 400, "parameter 'max_ids' must be in [1, 1000000]");
    rq.max_ids = *n;
  }
  retention::ReviewResult result;
  {
    const auto view = api.store->read();
    result = retention::review(view, rq, api.reference);
  }
  if (!result.error.empty()) return reply_json_error(res, 404, result.error);
  json body = to_json(result);
  body["stream"] = rq.stream;
  body["since"] = core::format_utc(rq.since_unix_ns);
  body["until"] =
      rq.until_unix_ns == ~0ull ? json(nullptr) : json(core::format_utc(rq.until_unix_ns));
  body["threshold"] = rq.threshold;
  reply(res, 200, body);
}

// POST /api/v1/flag
void flag_route(retention::RetentionStore& store, const HttpRequest& req, HttpResponse& res) {
  const json body = json::parse(req.body, nullptr, false);
  if (!body.is_object() || !body.contains("stream") || !body["stream"].is_string() ||
      !body.contains("trace_ids") || !body["trace_ids"].is_array()) {
    return reply_json_error(res, 400, R"(body must be {"stream": "...", "trace_ids": [id, ...]})");
  }
  const std::string stream = body["stream"].get<std::string>();
  if (stream.empty() || stream.size() >= format::kStreamNameMax)
    return reply_json_error(res, 400, "'stream' must be a stream name");
  const auto& list = body["trace_ids"];
  if (list.empty() || list.size() > kMaxFlagIds)
    return reply_json_error(res, 400,
                       "'trace_ids' must hold 1 to " + std::to_string(kMaxFlagIds) + " ids");
  std::vector<std::uint64_t> ids;
  for (const auto& v : list) {
    // Decimal strings too: a JSON number loses 64-bit ids in most clients.
    std::optional<std::uint64_t> id;
    if (v.is_number_unsigned())
      id = v.get<std::uint64_t>();
    else if (v.is_string())
      id = parse_u64(v.get<std::string>());
    if (!id)
      return reply_json_error(
          res, 400, "'trace_ids' must hold unsigned 64-bit integers (numbers or decimal strings)");
    ids.push_back(*id);
  }
  const auto r = store.flag(stream, ids, core::unix_now_ns());
  reply(
      res, r.refused ? 507 : 200,
      json{{"stream", stream}, {"added", r.added}, {"already", r.already}, {"refused", r.refused}});
}

}  // namespace

// The stream's retained rows in [since, until), oldest first, at most `limit`: the document of
// GET /api/v1/retained and of an incident bundle's retained.json; null if none are retained.
json retained_json(const retention::RetentionStore& store, const std::string& stream, std::uint64_t since,
                   std::uint64_t until, std::uint64_t limit) {
  json rows = json::array();
  bool truncated = false;
  json head;
  {
    const auto view = store.read();
    const auto* meta = view.meta(stream);
    if (!meta) return nullptr;
    head = json{{"stream", meta->name},
                {"component", meta->component},
                {"kind", std::string(format::stream_kind_name(meta->kind))},
                {"features", meta->feature_names}};
    view.for_each(stream, since, until, [&](const retention::RetainedRow& r) {
      if (rows.size() >= limit) {
        truncated = true;
        return;
      }
      json row = json::array(
          {r.timestamp_ns, r.has_trace_id ? json(std::to_string(r.trace_id)) : json(nullptr)});
      for (const double v : r.values) row.push_back(json_number_or_null(v));
      rows.push_back(std::move(row));
    });
  }
  std::sort(rows.begin(), rows.end(), [](const json& a, const json& b) {
    return a[0].get<std::uint64_t>() < b[0].get<std::uint64_t>();
  });
  head["since"] = core::format_utc(since);
  head["truncated"] = truncated;
  head["rows"] = std::move(rows);
  return head;
}

namespace {

// GET /api/v1/retained?stream=S[&since=24h][&until=0s][&limit=100000]: the stream's retained
// rows, oldest first, as [timestamp_ns, trace id (string) or null, values...] (mltap backfill).
void retained_route(const retention::RetentionStore& store, const HttpRequest& req,
                    HttpResponse& res) {
  const std::string stream = req.param("stream");
  if (stream.empty()) return reply_json_error(res, 400, "parameter 'stream' is required");
  const auto now = core::unix_now_ns();
  std::uint64_t since = now - std::min<std::uint64_t>(now, 24ull * 3600 * 1'000'000'000),
                until = ~0ull;
  for (const char* name : {"since", "until"}) {
    if (!req.has_param(name)) continue;
    const auto d = core::parse_duration(req.param(name));
    if (!d || d->count() < 0 || *d > std::chrono::hours(24 * 400))
      return reply_json_error(
          res, 400,
          std::string("parameter '") + name + "' must be a duration such as 6h, at most 400d");
    (std::string_view(name) == "since" ? since : until) =
        now - std::min<std::uint64_t>(now, static_cast<std::uint64_t>(d->count()));
  }
  std::uint64_t limit = 100'000;
  if (req.has_param("limit")) {
    const auto n = parse_u64(req.param("limit"));
    if (!n || *n < 1 || *n > 1'000'000)
      return reply_json_error(res, 400, "parameter 'limit' must be in [1, 1000000]");
    limit = *n;
  }
  json head = retained_json(store, stream, since, until, limit);
  if (head.is_null()) return reply_json_error(res, 404, "no retained records of stream '" + stream + "'");
  reply(res, 200, head);
}

json stats_json(const core::RetentionStats& s) {
  json dropped = json::object();
  for (std::size_t i = 0; i < s.dropped.size(); ++i)
    dropped[std::string(core::retention_drop_name(static_cast<core::RetentionDrop>(i)))] =
        s.dropped[i];
  json streams = json::array();
  for (const auto& st : s.streams) {
    streams.push_back(json{
        {"stream", st.stream},
        {"bytes", st.bytes},
        {"records", st.records},
        {"buckets", st.buckets},
        {"oldest", st.oldest_unix_ns ? json(core::format_utc(st.oldest_unix_ns)) : json(nullptr)}});
  }
  return json{{"persistent", s.persistent},   {"bytes", s.bytes},           {"records", s.records},
              {"sampled_out", s.sampled_out}, {"torn_bytes", s.torn_bytes}, {"dropped", dropped},
              {"flagged", s.flagged},         {"write_failing", s.write_failing},
              {"unwritten_bytes", s.unwritten_bytes}, {"streams", streams}};
}

}  // namespace

json to_json(const retention::ReviewResult& r) {
  json streams = json::array();
  for (const auto& s : r.streams) {
    json features = json::array();
    for (const auto& f : s.features) {
      features.push_back(json{{"feature", f.feature},
                              {"column", f.column},
                              {"auc", json_number_or_null(f.auc)},
                              {"wrong_mean_abs_z", json_number_or_null(f.wrong_mean_abs_z)},
                              {"correct_mean_abs_z", json_number_or_null(f.correct_mean_abs_z)},
                              {"n_wrong", f.n_wrong},
                              {"n_correct", f.n_correct},
                              {"reference", json{{"source", f.reference.source},
                                                 {"mean", json_number_or_null(f.reference.mean)},
                                                 {"sd", json_number_or_null(f.reference.sd)}}},
                              {"why", f.why}});
    }
    streams.push_back(json{{"stream", s.stream},
                           {"component", s.component},
                           {"score", json_number_or_null(s.score)},
                           {"wrong_found", s.wrong_found},
                           {"correct_found", s.correct_found},
                           {"why", s.why},
                           {"features", features}});
  }
  return json{{"labels_stream", r.labels_stream},
              {"task", std::string(format::task_name(r.task))},
              {"predictions", r.predictions},
              {"labelled", r.labelled},
              {"wrong", r.wrong},
              {"flagged", r.flagged},
              {"correct", r.correct},
              {"wrong_used", r.wrong_used},
              {"correct_used", r.correct_used},
              {"streams", streams}};
}

void register_retention_routes(HttpServer& server, RetentionApi api) {
  auto a = std::make_shared<const RetentionApi>(std::move(api));
  auto disabled = [](HttpResponse& res) {
    reply_json_error(res, 503, "retained samples are disabled (retention.enabled)");
  };
  server.get(R"(/api/v1/trace/([0-9]{1,20}))",
             [a, disabled](const HttpRequest& req, HttpResponse& res) {
               if (!a->store) return disabled(res);
               trace_route(*a->store, req, res);
             },
             kReadApi);
  server.get(
      "/api/v1/review",
      [a, disabled](const HttpRequest& req, HttpResponse& res) {
        if (!a->store) return disabled(res);
        review_route(*a, req, res);
      },
      kReadApi);
  server.get(
      "/api/v1/retained",
      [a, disabled](const HttpRequest& req, HttpResponse& res) {
        if (!a->store) return disabled(res);
        retained_route(*a->store, req, res);
      },
      kReadApi);
  server.get(
      "/api/v1/retention",
      [a, disabled](const HttpRequest&, HttpResponse& res) {
        if (!a->store) return disabled(res);
        reply(res, 200, stats_json(a->store->stats()));
      },
      kReadApi);

  // A state change: only with the webhook's bearer token, checked before the body is read.
  RouteOptions flag;
  flag.access = Access::open;
  flag.max_body_bytes = kMaxFlagBody;
  flag.before_body = [a](const HttpRequest& req) -> std::optional<HttpResponse> {
    HttpResponse res;
    res.close = true;
    if (!a->webhook) {
      reply_json_error(res, 503, "flagging needs the webhook's bearer token: set webhook.token_file");
      return res;
    }
    std::optional<std::uint64_t> length;
    if (req.has_header("Content-Length")) length = parse_u64(req.header("Content-Length"));
    // Token and content type as the webhook checks them; the length against this route's bound.
    if (auto refused = a->webhook->check_request(req.header("Authorization"),
                                                 req.header("Content-Type"), std::nullopt)) {
      res.status = refused->status;
      res.headers = refused->headers;
      res.set_content(refused->body, "application/json");
      return res;
    }
    if (length && *length > kMaxFlagBody) {
      reply_json_error(res, 413, "body larger than " + std::to_string(kMaxFlagBody) + " bytes");
      return res;
    }
    return std::nullopt;
  };
  flag.body_too_large = [] {
    HttpResponse res;
    res.close = true;
    reply_json_error(res, 413, "body larger than " + std::to_string(kMaxFlagBody) + " bytes");
    return res;
  };
  server.post(
      "/api/v1/flag",
      [a](const HttpRequest& req, HttpResponse& res) {
        if (!a->store)
          return reply_json_error(res, 503, "retained samples are disabled (retention.enabled)");
        flag_route(*a->store, req, res);
      },
      std::move(flag));
}

}  // namespace mltap::api
