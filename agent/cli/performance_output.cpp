#include "agent/cli/performance_output.hpp"

#include <cstdio>
#include <ostream>

namespace mltap::cli {
namespace {

std::string cell(const nlohmann::json& v) {
  if (!v.is_number()) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.4f", v.get<double>());
  return b;
}

std::string band_cell(const nlohmann::json& b) {
  if (!b.is_object()) return "-";
  char s[64];
  std::snprintf(s, sizeof s, "%.3f [%.3f,%.3f]", b.value("value", 0.0), b.value("lower", 0.0),
                b.value("upper", 0.0));
  return s;
}

// Label-free estimates beside the realized values (docs/performance.md, "Estimates").
void print_estimates(const nlohmann::json& doc, std::ostream& out) {
  if (!doc.contains("reference")) return;
  const auto& r = doc["reference"];
  char line[512];
  if (r.value("fitted", false)) {
    std::snprintf(line, sizeof line,
                  "\nestimates (label-free, CBPE; band = estimate +- 3 sigma): reference = first %llu joined pairs, "
                  "fitted %s, calibration %s (ECE raw %.4f, isotonic held-out %.4f)\n",
                  (unsigned long long)r.value("pairs", 0ull),
                  r["fitted_at"].is_string() ? r["fitted_at"].get<std::string>().c_str() : "?",
                  r.value("calibration", "?").c_str(), r.value("ece_raw", 0.0),
                  r.value("ece_isotonic_held_out", 0.0));
  } else {
    std::snprintf(line, sizeof line,
                  "\nestimates (label-free, CBPE): no reference yet (%llu of %llu joined pairs)\n",
                  (unsigned long long)r.value("pairs", 0ull), (unsigned long long)r.value("target", 0ull));
  }
  out << line;
  std::snprintf(line, sizeof line, "%-25s %11s", "WINDOW (UTC)", "ESTIMATED");
  out << line;
  for (const char* n : {"accuracy", "precision", "recall", "f1"}) {
    std::snprintf(line, sizeof line, "  %-22s %8s", (std::string("est. ") + n).c_str(), "realized");
    out << line;
  }
  out << "\n";
  for (const auto& w : doc.at("windows")) {
    if (!w.contains("estimate")) continue;
    const auto& e = w["estimate"];
    std::snprintf(line, sizeof line, "%-25s %11llu", w.value("start", "?").c_str(),
                  (unsigned long long)e.value("predictions", 0ull));
    out << line;
    if (e["withheld"].is_string()) {
      out << "  withheld (" << e["withheld"].get<std::string>() << "): " << e.value("withheld_detail", "") << "\n";
      continue;
    }
    for (const char* n : {"accuracy", "precision", "recall", "f1"}) {
      std::snprintf(line, sizeof line, "  %-22s %8s", band_cell(e["metrics"][n]).c_str(),
                    cell(w["metrics"][n]).c_str());
      out << line;
    }
    out << "\n";
  }
}

}  // namespace

void print_performance(const nlohmann::json& doc, std::ostream& out, const std::string& slice) {
  const auto& c = doc.at("counters");
  const auto& p = doc.at("pending");
  char line[512];
  std::snprintf(line, sizeof line, "%s  [%s, labels from %s]  window %.0fs  label TTL %.0fs\n",
                doc.value("stream", "?").c_str(), doc.value("task", "?").c_str(),
                doc.value("labels_stream", "?").c_str(), doc.value("window_seconds", 0.0),
                doc.value("label_ttl_seconds", 0.0));
  out << line;
  std::snprintf(line, sizeof line,
                "labels: joined %llu  unmatched %llu  duplicate %llu  late %llu  | pending %llu of %llu  "
                "waiting labels %llu  expired unlabelled %llu  evicted %llu/%llu/%llu (joined/waiting/prediction)\n",
                (unsigned long long)c.value("joined", 0ull), (unsigned long long)c.value("unmatched", 0ull),
                (unsigned long long)c.value("duplicate", 0ull), (unsigned long long)c.value("late", 0ull),
                (unsigned long long)p.value("predictions", 0ull), (unsigned long long)p.value("capacity", 0ull),
                (unsigned long long)p.value("waiting_labels", 0ull),
                (unsigned long long)c.value("expired_unlabelled", 0ull),
                (unsigned long long)c["evicted"].value("joined_marker", 0ull),
                (unsigned long long)c["evicted"].value("waiting_label", 0ull),
                (unsigned long long)c["evicted"].value("prediction", 0ull));
  out << line;
  const std::string task = doc.value("task", "");
  std::vector<std::string> names;
  if (task == "binary") names = {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "calibration_error"};
  else if (task == "multiclass") names = {"accuracy"};
  else names = {"mae", "rmse"};
  std::snprintf(line, sizeof line, "%-25s %11s %10s %9s", "WINDOW (UTC)", "PREDICTIONS", "LABELLED", "COVERAGE");
  out << line;
  for (const auto& n : names) {
    std::snprintf(line, sizeof line, " %17s", n.c_str());
    out << line;
  }
  out << "\n";
  for (const auto& w : doc.at("windows")) {
    std::snprintf(line, sizeof line, "%-25s %11llu %10llu %9s", w.value("start", "?").c_str(),
                  (unsigned long long)w.value("predictions", 0ull), (unsigned long long)w.value("labelled", 0ull),
                  cell(w["coverage"]).c_str());
    out << line;
    for (const auto& n : names) {
      std::snprintf(line, sizeof line, " %17s", cell(w["metrics"][n]).c_str());
      out << line;
    }
    out << "\n";
    // Sliced streams: a row per slice under its window.
    if (!w.contains("slices")) continue;
    for (const auto& sl : w["slices"]) {
      const std::string value = sl.value("slice", "?");
      if (!slice.empty() && value != slice) continue;
      std::snprintf(line, sizeof line, "  %-23s %11llu %10llu %9s", (doc["slices"].value("column", "slice") + "=" + value).c_str(),
                    (unsigned long long)sl.value("predictions", 0ull), (unsigned long long)sl.value("labelled", 0ull),
                    cell(sl["coverage"]).c_str());
      out << line;
      for (const auto& n : names) {
        std::snprintf(line, sizeof line, " %17s", cell(sl["metrics"][n]).c_str());
        out << line;
      }
      out << "\n";
    }
  }
  print_estimates(doc, out);
}

}  // namespace mltap::cli
