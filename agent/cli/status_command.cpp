#include "agent/cli/status_command.hpp"


#include <cmath>
#include <cstdio>
#include <string>
#include <vector>
#include <iostream>
#include <memory>

#include "agent/cli/agent_client.hpp"
#include "core/time.hpp"

namespace mltap::cli {
namespace {

std::string age(std::uint64_t then_ns) {
  if (then_ns == 0) return "never";
  const double now = static_cast<double>(core::unix_now_ns()) / 1e9;
  const double d = now - static_cast<double>(then_ns) / 1e9;
  char b[32];
  if (d < 0) std::snprintf(b, sizeof b, "now");
  else if (d < 120) std::snprintf(b, sizeof b, "%.1fs ago", d);
  else if (d < 7200) std::snprintf(b, sizeof b, "%.0fm ago", d / 60);
  else std::snprintf(b, sizeof b, "%.1fh ago", d / 3600);
  return b;
}

std::uint64_t u64(const nlohmann::json& j, const char* k) {
  return j.contains(k) && j[k].is_number_unsigned() ? j[k].get<std::uint64_t>() : 0;
}

void print_table(const nlohmann::json& doc, const std::string& only) {
  const auto& streams = doc.at("streams");
  if (streams.empty()) {
    std::printf("no streams (producers write with MLTAP_NAMESPACE matching mltapd --namespace)\n");
    return;
  }
  for (const auto& s : streams) {
    const std::string name = s.value("name", "?");
    if (!only.empty() && name != only) continue;
    std::uint64_t dropped = 0;
    for (const auto& [k, v] : s["dropped"].items()) dropped += v.get<std::uint64_t>();
    std::uint64_t invalid = 0;
    for (const auto& [k, v] : s["invalid"].items()) invalid += v.get<std::uint64_t>();
    const double rate = s["record_rate"].is_number() ? s["record_rate"].get<double>() : 0.0;
    std::printf("%s  [%s, %s]  records %llu  writes %llu  sampled out %llu  dropped %llu  invalid %llu  %.1f rec/s  last record %s\n",
                name.c_str(), s.value("component", "?").c_str(), s.value("kind", "?").c_str(),
                (unsigned long long)u64(s, "records"), (unsigned long long)u64(s, "writes"),
                (unsigned long long)u64(s, "sampled_out"), (unsigned long long)dropped,
                (unsigned long long)invalid, rate, age(u64(s, "last_record_unix_ns")).c_str());
    if (dropped > 0) {
      std::printf("    dropped by cause:");
      for (const auto& [k, v] : s["dropped"].items()) {
        if (v.get<std::uint64_t>() > 0) std::printf(" %s=%llu", k.c_str(), (unsigned long long)v.get<std::uint64_t>());
      }
      std::printf("\n");
    }
    std::printf("    %-8s %-7s %-20s %-10s %12s %12s %10s %12s  %s\n", "PID", "STATE", "COMPONENT",
                "SDK", "WRITTEN", "READ", "DROPPED", "RATE/s", "LAST SEEN");
    for (const auto& p : s["producers"]) {
      const double prate = p["write_rate"].is_number() ? p["write_rate"].get<double>() : 0.0;
      std::printf("    %-8llu %-7s %-20s %-10s %12llu %12llu %10llu %12.1f  %s\n",
                  (unsigned long long)u64(p, "pid"), p.value("state", "?").c_str(),
                  p.value("component", "?").c_str(), p.value("sdk", "?").c_str(),
                  (unsigned long long)u64(p, "rows_written"), (unsigned long long)u64(p, "rows_read"),
                  (unsigned long long)u64(p, "rows_dropped"), prate,
                  age(u64(p, "last_seen_unix_ns")).c_str());
    }
  }
}

// What each stream's reference can decide: the range of minimum detectable effects over its
// features and, where a reference is small for the thresholds, the detectors' words for it.
void print_detectors(const nlohmann::json& doc, const std::string& only) {
  if (!doc.contains("streams") || !doc["streams"].is_array()) return;
  for (const auto& s : doc["streams"]) {
    const std::string name = s.value("name", "?");
    if (!only.empty() && name != only) continue;
    const auto& ref = s["reference"];
    std::printf("%s  detectors: reference %s (%llu rows), %u of %u features drifted in the last window\n", name.c_str(),
                ref.value("source", "?").c_str(), (unsigned long long)u64(ref, "rows"),
                s.value("drifted_features", 0u), s.value("features_analyzed", 0u));
    double lo[2] = {INFINITY, INFINITY}, hi[2] = {0, 0};
    std::vector<std::string> notes;
    for (const auto& f : s["features"]) {
      const auto& m = f["min_detectable_effect"];
      if (m.is_object() && m["value"].is_number()) {
        const int k = m.value("method", "") == "wasserstein" ? 0 : m.value("method", "") == "linf" ? 1 : -1;
        if (k >= 0) {
          lo[k] = std::min(lo[k], m["value"].get<double>());
          hi[k] = std::max(hi[k], m["value"].get<double>());
        }
      }
      if (f.value("power_note", "") != "") notes.push_back(f.value("name", "?") + ": " + f.value("power_note", ""));
    }
    if (hi[0] > 0) std::printf("    smallest detectable mean shift (W1/sd): %.3g to %.3g over numeric features\n", lo[0], hi[0]);
    if (hi[1] > 0) std::printf("    smallest detectable share change (L-inf): %.3g to %.3g over categorical features\n", lo[1], hi[1]);
    for (std::size_t i = 0; i < notes.size() && i < 10; ++i) std::printf("    NOTE %s\n", notes[i].c_str());
    if (notes.size() > 10) std::printf("    ... %zu more notes (mltap status --json, /api/v1/detectors)\n", notes.size() - 10);
  }
}

// Model performance of each predictions stream with a labels stream: per prediction-time window
// (newest two), the predictions, label coverage and realized accuracy so far, and the label-free
// estimate where the agent gives one (`mltap performance STREAM` has every metric and window).
void print_performance_summary(const std::string& agent, const nlohmann::json& list, const std::string& only) {
  if (!list.contains("streams") || !list["streams"].is_array()) return;
  for (const auto& s : list["streams"]) {
    const std::string name = s.value("stream", "?");
    if (!only.empty() && name != only) continue;
    std::string error;
    auto doc = get_json(agent, "/api/v1/performance?stream=" + percent_encode(name) + "&since=1d", error);
    if (!doc || !doc->contains("windows") || !(*doc)["windows"].is_array()) continue;
    const auto& c = (*doc)["counters"];
    std::printf("%s  performance [%s, labels from %s]: joined %llu, unmatched %llu, late %llu\n", name.c_str(),
                doc->value("task", "?").c_str(), doc->value("labels_stream", "?").c_str(),
                (unsigned long long)u64(c, "joined"), (unsigned long long)u64(c, "unmatched"),
                (unsigned long long)u64(c, "late"));
    const auto& windows = (*doc)["windows"];
    const std::size_t first = windows.size() > 2 ? windows.size() - 2 : 0;
    for (std::size_t i = first; i < windows.size(); ++i) {
      const auto& w = windows[i];
      const auto& m = w["metrics"];
      std::string metric;
      char b[160];
      if (m.contains("accuracy") && m["accuracy"].is_number()) {
        std::snprintf(b, sizeof b, "accuracy %.3f", m["accuracy"].get<double>());
        metric = b;
      } else if (m.contains("mae") && m["mae"].is_number()) {
        std::snprintf(b, sizeof b, "MAE %.4g", m["mae"].get<double>());
        metric = b;
      } else {
        metric = "no labels yet";
      }
      std::string estimate;
      if (w.contains("estimate") && w["estimate"].is_object()) {
        const auto& e = w["estimate"];
        const nlohmann::json none;
        const auto& a = e.contains("metrics") && e["metrics"].contains("accuracy") ? e["metrics"]["accuracy"] : none;
        if (a.is_object() && a.contains("value") && a["value"].is_number()) {
          std::snprintf(b, sizeof b, "  estimated accuracy %.3f [%.3f, %.3f]", a["value"].get<double>(),
                        a.value("lower", 0.0), a.value("upper", 0.0));
          estimate = b;
        } else if (e.contains("withheld") && e["withheld"].is_string()) {
          estimate = "  estimate withheld: " + e.value("withheld_detail", e["withheld"].get<std::string>());
        }
      }
      const double coverage = w["coverage"].is_number() ? w["coverage"].get<double>() : 0.0;
      std::printf("    window %s  predictions %llu  coverage %.1f%%  %s%s\n", w.value("start", "?").c_str(),
                  (unsigned long long)u64(w, "predictions"), 100.0 * coverage, metric.c_str(), estimate.c_str());
    }
  }
}

}  // namespace

void add_status_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("status", "Show every stream mltapd reads: producers, rates, drops, last seen");
  auto opts = std::make_shared<std::tuple<std::string, bool, std::string>>(default_agent_url(), false, "");
  cmd->add_option("--agent", std::get<0>(*opts), "mltapd URL (default $MLTAP_AGENT or http://127.0.0.1:9645)");
  cmd->add_flag("--json", std::get<1>(*opts), "Print the agent's JSON");
  cmd->add_option("--stream", std::get<2>(*opts), "Only this stream");
  cmd->callback([opts, &exit_code] {
    std::string error;
    auto doc = get_json(std::get<0>(*opts), "/api/v1/streams?fresh=1", error);
    if (!doc) {
      std::fprintf(stderr, "mltap status: %s\n", error.c_str());
      exit_code = 2;
      return;
    }
    try {
      if (std::get<1>(*opts)) {
        std::cout << doc->dump(2) << "\n";
      } else {
        print_table(*doc, std::get<2>(*opts));
        std::string derr;
        if (auto det = get_json(std::get<0>(*opts), "/api/v1/detectors", derr)) print_detectors(*det, std::get<2>(*opts));
        if (auto perf = get_json(std::get<0>(*opts), "/api/v1/performance", derr)) {
          print_performance_summary(std::get<0>(*opts), *perf, std::get<2>(*opts));
        }
      }
      exit_code = 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mltap status: unexpected answer from mltapd: %s\n", e.what());
      exit_code = 2;
    }
  });
}

}  // namespace mltap::cli
