#include "agent/cli/backfill_command.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/api/detector_json.hpp"
#include "agent/cli/agent_client.hpp"
#include "agent/detectors/config.hpp"
#include "agent/detectors/engine.hpp"
#include "agent/detectors/profile.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"

namespace mltap::cli {
namespace {

struct BackfillArgs {
  std::string stream;
  std::string config;
  std::string reference;
  std::string since = "24h";
  std::string until;
  std::string agent = default_agent_url();
  std::uint64_t limit = 1'000'000;
  bool json = false;
  std::string openmetrics;  // also write the windows as OpenMetrics with their timestamps
};

format::StreamKind kind_of(const std::string& k) {
  for (auto v : {format::StreamKind::features, format::StreamKind::predictions,
                 format::StreamKind::embeddings, format::StreamKind::labels}) {
    if (format::stream_kind_name(v) == k) return v;
  }
  return format::StreamKind::features;
}

// OpenMetrics text of the backfilled windows, each sample stamped with its window's end, for
// Prometheus' own backfill: `promtool tsdb create-blocks-from openmetrics FILE DATA_DIR` makes
// blocks a Prometheus serves (docs/lineage.md). Families are contiguous, samples in time order.
std::string openmetrics_label(const std::string& v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void write_openmetrics(const std::string& path, const std::string& stream, const nlohmann::json& windows) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path);
  const std::string sl = "stream=\"" + openmetrics_label(stream) + "\"";
  auto ts = [](const nlohmann::json& w) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3f", static_cast<double>(w["end_unix_ns"].get<std::uint64_t>()) / 1e9);
    return std::string(b);
  };
  out << "# HELP mltap_backfill_stream_drift_detected Drift decided in the backfilled window (1) or not (0).\n"
         "# TYPE mltap_backfill_stream_drift_detected gauge\n";
  for (const auto& w : windows)
    out << "mltap_backfill_stream_drift_detected{" << sl << "} " << (w["drift_detected"].get<bool>() ? 1 : 0)
        << " " << ts(w) << "\n";
  out << "# HELP mltap_backfill_window_records Records of the backfilled window.\n"
         "# TYPE mltap_backfill_window_records gauge\n";
  for (const auto& w : windows)
    out << "mltap_backfill_window_records{" << sl << "} " << w["records"].get<std::uint64_t>() << " " << ts(w)
        << "\n";
  out << "# HELP mltap_backfill_feature_drift_ratio Largest drift score over its decision level of a feature "
         "in the backfilled window.\n"
         "# TYPE mltap_backfill_feature_drift_ratio gauge\n";
  std::map<std::string, std::vector<std::pair<std::string, double>>> by_feature;  // contiguous series
  for (const auto& w : windows)
    for (const auto& [name, v] : w["ratios"].items()) by_feature[name].emplace_back(ts(w), v.get<double>());
  for (const auto& [name, samples] : by_feature)
    for (const auto& [t, v] : samples) {
      char b[40];
      std::snprintf(b, sizeof b, "%.17g", v);
      out << "mltap_backfill_feature_drift_ratio{" << sl << ",feature=\"" << openmetrics_label(name) << "\"} " << b
          << " " << t << "\n";
    }
  out << "# EOF\n";
  out.flush();
  if (!out) throw std::runtime_error("cannot write " + path);
}

int run_backfill(const BackfillArgs& a) {
  for (const auto* d : {&a.since, &a.until}) {
    if (d->empty()) continue;
    const auto v = core::parse_duration(*d);
    if (!v || v->count() < 0) {
      std::fprintf(stderr, "mltap backfill: '%s' is not a duration such as 6h or 7d\n", d->c_str());
      return 2;
    }
  }
  detectors::EngineConfig cfg;
  if (!a.config.empty()) {
    auto root = core::load_file(a.config);  // ConfigError: file:line:column
    core::ConfigSection top(root, a.config, "");
    auto sec = top.child("detectors");
    cfg = detectors::parse_engine_config(sec);
  }
  std::string path = "/api/v1/retained?stream=" + percent_encode(a.stream) +
                     "&since=" + percent_encode(a.since) + "&limit=" + std::to_string(a.limit);
  if (!a.until.empty()) path += "&until=" + percent_encode(a.until);
  std::string error;
  const auto doc = get_json(a.agent, path, error);
  if (!doc) {
    std::fprintf(stderr, "mltap backfill: %s\n", error.c_str());
    return 2;
  }
  // The stream's settings as configured, but time passes as the records say (their timestamps),
  // and staleness and throughput, which measure the agent's clock against live producers, are off.
  detectors::StreamSettings st = cfg.settings_for(a.stream);
  st.staleness.enabled = false;
  st.throughput.enabled = false;
  if (!a.reference.empty()) st.reference = a.reference;
  cfg.streams.clear();
  cfg.streams.emplace_back(a.stream, st);
  detectors::DetectorEngine engine(cfg);

  core::StreamInfo info;
  info.name = a.stream;
  info.component = doc->value("component", "");
  info.kind = kind_of(doc->value("kind", "features"));
  info.feature_names = doc->value("features", std::vector<std::string>{});
  const auto& rows = doc->at("rows");
  nlohmann::json windows = nlohmann::json::array();
  std::uint64_t closed = 0, last_ts = 0;
  std::vector<double> values;
  std::size_t cols = 0;
  auto record_window = [&] {
    const auto snap = engine.snapshot();
    if (snap->streams.empty()) return;
    const auto& ss = *snap->streams.front();
    if (ss.windows_closed == closed) return;
    closed = ss.windows_closed;
    nlohmann::json drifted = nlohmann::json::array();
    for (const auto& f : *ss.features) {
      if (f.drifted)
        drifted.push_back(
            nlohmann::json{{"feature", f.name}, {"method", f.max_method}, {"ratio", f.max_ratio}});
    }
    nlohmann::json ratios = nlohmann::json::object();
    for (const auto& f : *ss.features) {
      if (f.enabled && !f.scores.empty() && std::isfinite(f.max_ratio)) ratios[f.name] = f.max_ratio;
    }
    windows.push_back(
        nlohmann::json{{"end", core::format_utc(ss.last_window_end_unix_ns)},
                       {"end_unix_ns", ss.last_window_end_unix_ns},
                       {"ratios", ratios},
                       {"records", ss.last_window_records},
                       {"reference", std::string(core::reference_source_name(ss.reference))},
                       {"drift_detected", ss.drift_detected},
                       {"drifted", drifted}});
  };
  // A window closes at most once per batch: rows of one record are fed in chunks of at most
  // window_records rows, so that a large record closes every window it fills.
  const std::size_t chunk = static_cast<std::size_t>(
      std::clamp<std::uint64_t>(st.window_records ? st.window_records : 4096, 1, 4096));
  auto emit = [&](std::uint64_t ts) {
    const std::size_t n = cols ? values.size() / cols : 0;
    for (std::size_t r0 = 0; r0 < n; r0 += chunk) {
      core::DecodedBatch b;
      b.stream = &info;
      b.timestamp_ns = ts;
      b.dtype = format::DType::float64;
      b.cols = cols;
      b.rows = std::min(chunk, n - r0);
      b.values = std::span<const double>(values).subspan(r0 * cols, b.rows * cols);
      engine.on_batch(b);
      engine.on_tick(ts);
      engine.publish_now();
      record_window();
    }
    values.clear();
  };
  // Rows of one timestamp came from one record (or several written in the same clock tick).
  for (const auto& r : rows) {
    const auto ts = r.at(0).get<std::uint64_t>();
    const std::size_t width = r.size() - 2;
    if (ts != last_ts || width != cols) emit(last_ts);
    last_ts = ts;
    cols = width;
    for (std::size_t j = 2; j < r.size(); ++j)
      values.push_back(r[j].is_number() ? r[j].get<double>() : NAN);
  }
  emit(last_ts);
  engine.flush(last_ts);
  const auto snap = engine.snapshot();
  nlohmann::json findings = nlohmann::json::array();
  for (const auto* list : {&snap->open_findings, &snap->closed_findings})
    for (const auto& f : *list) findings.push_back(api::to_json(f));
  if (!a.openmetrics.empty()) write_openmetrics(a.openmetrics, a.stream, windows);
  for (auto& w : windows) {
    w.erase("end_unix_ns");
    w.erase("ratios");
  }
  if (a.json) {
    nlohmann::json out{{"stream", a.stream},  {"since", doc->value("since", "")},
                       {"rows", rows.size()}, {"truncated", doc->value("truncated", false)},
                       {"windows", windows},  {"findings", findings}};
    std::cout << out.dump(1) << "\n";
  } else {
    std::printf("backfill of %s since %s: %zu retained rows%s, %zu windows closed\n",
                a.stream.c_str(), doc->value("since", "?").c_str(), rows.size(),
                doc->value("truncated", false) ? " (truncated at --limit)" : "", windows.size());
    for (const auto& w : windows) {
      std::string names;
      for (const auto& d : w["drifted"])
        names += (names.empty() ? "" : ", ") + d["feature"].get<std::string>();
      std::printf("  window ending %s  %6llu records  %s\n", w["end"].get<std::string>().c_str(),
                  (unsigned long long)w["records"].get<std::uint64_t>(),
                  names.empty() ? "no drift" : ("DRIFT: " + names).c_str());
    }
    if (findings.empty()) std::printf("no findings\n");
    for (const auto& f : findings) std::printf("FINDING %s\n", f.dump().c_str());
  }
  return findings.empty() ? 0 : 3;
}

}  // namespace

void add_backfill_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "backfill", "Run a detectors configuration over a stream's retained rows of a past interval");
  auto a = std::make_shared<BackfillArgs>();
  cmd->add_option("stream", a->stream, "The stream")->required();
  cmd->add_option("--config", a->config,
                  "YAML file with a detectors: section (default: built-in defaults)");
  cmd->add_option("--reference", a->reference,
                  "Reference profile file (default: pinned from the first rows)");
  cmd->add_option("--since", a->since, "Rows of this long ago and later (default 24h)");
  cmd->add_option("--until", a->until, "...and up to this long ago (default now)");
  cmd->add_option("--limit", a->limit, "Rows read at most (default 1000000)")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--agent", a->agent,
                  "mltapd URL (default $MLTAP_AGENT or http://127.0.0.1:9645)");
  cmd->add_flag("--json", a->json, "Print JSON: windows and findings");
  cmd->add_option("--openmetrics", a->openmetrics,
                  "Also write the windows' results as OpenMetrics with timestamps to this file, for "
                  "`promtool tsdb create-blocks-from openmetrics`");
  cmd->callback([a, &exit_code] {
    try {
      exit_code = run_backfill(*a);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mltap backfill: %s\n", e.what());
      exit_code = 2;
    }
  });
}

}  // namespace mltap::cli
