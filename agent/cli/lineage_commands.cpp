#include "agent/cli/lineage_commands.hpp"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <vector>

#include "agent/cli/agent_client.hpp"
#include "core/config_reader.hpp"

namespace mltap::cli {
namespace {

std::string num(const nlohmann::json& v, const char* f = "%.4g") {
  if (!v.is_number()) return "-";
  char b[32];
  std::snprintf(b, sizeof b, f, v.get<double>());
  return b;
}

bool valid_id(const std::string& s) {
  std::uint64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

bool check_duration(const char* cmd, const char* opt, const std::string& v, int& exit_code) {
  const auto d = core::parse_duration(v);
  if (d && d->count() > 0) return true;
  std::fprintf(stderr, "mltap %s: %s must be a duration such as 6h or 7d (got '%s')\n", cmd, opt,
               v.c_str());
  exit_code = 2;
  return false;
}

struct TraceArgs {
  std::string id;
  std::string agent = default_agent_url();
  bool json = false;
};

struct ReviewArgs {
  std::string stream;
  std::string agent = default_agent_url();
  bool json = false;
  std::string since = "24h";
  std::string until;
  std::string labels;
  std::string threshold;
  std::size_t top = 10;
};

struct FlagArgs {
  std::string stream;
  std::vector<std::string> ids;
  std::string agent = default_agent_url();
  std::string token_file;
  bool json = false;
};

void add_trace(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("trace", "The retained records of a trace id in every stream");
  auto a = std::make_shared<TraceArgs>();
  cmd->add_option("id", a->id, "Trace id (unsigned 64-bit decimal)")->required();
  cmd->add_option("--agent", a->agent,
                  "mltapd URL (default $MLTAP_AGENT or http://127.0.0.1:9645)");
  cmd->add_flag("--json", a->json, "Print the agent's JSON");
  cmd->callback([a, &exit_code] {
    if (!valid_id(a->id)) {
      std::fprintf(stderr, "mltap trace: '%s' is not a trace id (unsigned 64-bit decimal)\n",
                   a->id.c_str());
      exit_code = 2;
      return;
    }
    std::string error;
    int status = 0;
    const auto doc = get_json(a->agent, "/api/v1/trace/" + a->id, error, &status);
    if (!doc) {
      if (status == 404 && error.find("retained samples are disabled") == std::string::npos) {
        std::fprintf(stderr, "mltap trace: no retained record of trace id %s\n", a->id.c_str());
        exit_code = 1;
        return;
      }
      std::fprintf(stderr, "mltap trace: %s\n", error.c_str());
      exit_code = 2;
      return;
    }
    if (a->json)
      std::cout << doc->dump(2) << "\n";
    else
      print_trace(*doc, std::cout);
    exit_code = 0;
  });
}

void add_review(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "review",
      "Rank upstream streams and features by how abnormal they were for wrong predictions");
  auto a = std::make_shared<ReviewArgs>();
  cmd->add_option("stream", a->stream, "The predictions stream")->required();
  cmd->add_option("--agent", a->agent,
                  "mltapd URL (default $MLTAP_AGENT or http://127.0.0.1:9645)");
  cmd->add_flag("--json", a->json, "Print the agent's JSON");
  cmd->add_option("--since", a->since, "Predictions of this long ago and later (default 24h)");
  cmd->add_option("--until", a->until, "...and up to this long ago (default now)");
  cmd->add_option("--labels", a->labels, "Labels stream (default: the one the stream declared)");
  cmd->add_option("--threshold", a->threshold, "Binary: score >= threshold predicts positive");
  cmd->add_option("--top", a->top, "Features printed (default 10)")->check(CLI::Range(1, 10000));
  cmd->callback([a, &exit_code] {
    if (!check_duration("review", "--since", a->since, exit_code)) return;
    if (!a->until.empty() && !check_duration("review", "--until", a->until, exit_code)) return;
    std::string path =
        "/api/v1/review?stream=" + percent_encode(a->stream) + "&since=" + percent_encode(a->since);
    if (!a->until.empty()) path += "&until=" + percent_encode(a->until);
    if (!a->labels.empty()) path += "&labels=" + percent_encode(a->labels);
    if (!a->threshold.empty()) path += "&threshold=" + percent_encode(a->threshold);
    std::string error;
    const auto doc = get_json(a->agent, path, error);
    if (!doc) {
      std::fprintf(stderr, "mltap review: %s\n", error.c_str());
      exit_code = 2;
      return;
    }
    try {
      if (a->json)
        std::cout << doc->dump(2) << "\n";
      else
        print_review(*doc, std::cout, a->top);
      exit_code = 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mltap review: unexpected answer from mltapd: %s\n", e.what());
      exit_code = 2;
    }
  });
}

void add_flag(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "flag", "Mark predictions as wrong (by trace id) for mltap review; needs the webhook token");
  auto a = std::make_shared<FlagArgs>();
  cmd->add_option("stream", a->stream, "The predictions stream")->required();
  cmd->add_option("ids", a->ids, "Trace ids")->required();
  cmd->add_option("--agent", a->agent,
                  "mltapd URL (default $MLTAP_AGENT or http://127.0.0.1:9645)");
  cmd->add_option("--token-file", a->token_file,
                  "mltapd's webhook.token_file (default $MLTAP_TOKEN_FILE)");
  cmd->add_flag("--json", a->json, "Print the agent's JSON");
  cmd->callback([a, &exit_code] {
    nlohmann::json ids = nlohmann::json::array();
    for (const auto& id : a->ids) {
      if (!valid_id(id)) {
        std::fprintf(stderr, "mltap flag: '%s' is not a trace id (unsigned 64-bit decimal)\n",
                     id.c_str());
        exit_code = 2;
        return;
      }
      ids.push_back(id);  // as strings: a JSON number may lose a 64-bit id
    }
    if (a->token_file.empty()) {
      const char* env = std::getenv("MLTAP_TOKEN_FILE");
      if (env) a->token_file = env;
    }
    std::string error;
    const auto doc =
        post_json(a->agent, "/api/v1/flag",
                  nlohmann::json{{"stream", a->stream}, {"trace_ids", ids}}, a->token_file, error);
    if (!doc) {
      std::fprintf(stderr, "mltap flag: %s\n", error.c_str());
      exit_code = 2;
      return;
    }
    if (a->json) {
      std::cout << doc->dump(2) << "\n";
    } else {
      std::printf("%s: %llu flagged, %llu already flagged\n", a->stream.c_str(),
                  (unsigned long long)doc->value("added", 0ull),
                  (unsigned long long)doc->value("already", 0ull));
    }
    exit_code = 0;
  });
}

}  // namespace

void print_trace(const nlohmann::json& doc, std::ostream& out) {
  const auto& records = doc.at("records");
  out << "trace " << doc.value("trace_id", "?") << ": " << records.size()
      << (records.size() == 1 ? " record\n" : " records\n");
  for (const auto& r : records) {
    out << r.value("timestamp", "?") << "  " << r.value("stream", "?") << " ["
        << r.value("component", "") << ", " << r.value("kind", "") << "]"
        << (r.value("flagged", false) ? " FLAGGED" : "") << "\n   ";
    for (const auto& [name, v] : r.at("values").items())
      out << " " << name << "=" << num(v, "%.6g");
    out << "\n";
  }
}

void print_review(const nlohmann::json& doc, std::ostream& out, std::size_t top) {
  char line[512];
  std::snprintf(line, sizeof line,
                "review of %s [%s, labels from %s] since %s: %llu predictions, %llu labelled, "
                "%llu wrong (%llu flagged), %llu correct\n",
                doc.value("stream", "?").c_str(), doc.value("task", "?").c_str(),
                doc.value("labels_stream", "-").c_str(), doc.value("since", "?").c_str(),
                (unsigned long long)doc.value("predictions", 0ull),
                (unsigned long long)doc.value("labelled", 0ull),
                (unsigned long long)doc.value("wrong", 0ull),
                (unsigned long long)doc.value("flagged", 0ull),
                (unsigned long long)doc.value("correct", 0ull));
  out << line;
  const auto& streams = doc.at("streams");
  if (doc.value("wrong", 0ull) == 0) {
    out << "no wrong or flagged predictions retained in that interval: nothing to review\n";
    return;
  }
  if (streams.empty()) {
    out << "no other stream retained the trace ids of the wrong predictions\n";
    return;
  }
  out << "\nSTREAMS (most abnormal for wrong predictions first)\n";
  std::size_t rank = 0;
  for (const auto& s : streams) {
    std::snprintf(line, sizeof line, "%3zu. %-32s score %s  %s\n", ++rank,
                  s.value("stream", "?").c_str(), num(s["score"], "%.3f").c_str(),
                  s.value("component", "").c_str());
    out << line;
  }
  struct Row {
    std::string stream;
    const nlohmann::json* f;
  };
  std::vector<Row> rows;
  for (const auto& s : streams)
    for (const auto& f : s.at("features")) rows.push_back({s.value("stream", "?"), &f});
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    const double x = (*a.f)["auc"].is_number() ? (*a.f)["auc"].get<double>() : -1;
    const double y = (*b.f)["auc"].is_number() ? (*b.f)["auc"].get<double>() : -1;
    return x > y;
  });
  out << "\nFEATURES\n";
  std::snprintf(line, sizeof line, "%4s %-28s %-20s %7s %12s %12s %7s %7s  %s\n", "RANK", "STREAM",
                "FEATURE", "AUC", "|z| WRONG", "|z| CORRECT", "N WRONG", "N OK", "REFERENCE");
  out << line;
  for (std::size_t i = 0; i < rows.size() && i < top; ++i) {
    const auto& f = *rows[i].f;
    std::snprintf(line, sizeof line, "%4zu %-28s %-20s %7s %12s %12s %7llu %7llu  %s\n", i + 1,
                  rows[i].stream.c_str(), f.value("feature", "?").c_str(),
                  num(f["auc"], "%.3f").c_str(), num(f["wrong_mean_abs_z"]).c_str(),
                  num(f["correct_mean_abs_z"]).c_str(),
                  (unsigned long long)f.value("n_wrong", 0ull),
                  (unsigned long long)f.value("n_correct", 0ull),
                  f["reference"].value("source", "?").c_str());
    out << line;
  }
  if (!rows.empty()) out << "\nwhy: " << rows.front().f->value("why", "") << "\n";
}

void add_lineage_commands(CLI::App& app, int& exit_code) {
  add_trace(app, exit_code);
  add_review(app, exit_code);
  add_flag(app, exit_code);
}

}  // namespace mltap::cli
