#include "agent/cli/profile_commands.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "agent/api/detector_json.hpp"
#include "agent/detectors/array_io.hpp"
#include "agent/detectors/config.hpp"
#include "agent/detectors/engine.hpp"
#include "agent/detectors/noise.hpp"
#include "agent/detectors/profile.hpp"
#include "core/config_reader.hpp"

namespace mltap::cli {

using api::to_json;
using core::DetectorStreamSnapshot;
using core::feature_kind_name;
using core::FeatureKind;
using core::finding_kind_name;
using core::FindingKind;
using core::severity_name;

namespace {

using namespace mltap::detectors;  // NOLINT(google-build-using-namespace): the engine's CLI

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, ',')) {
    while (!cur.empty() && cur.front() == ' ') cur.erase(cur.begin());
    while (!cur.empty() && cur.back() == ' ') cur.pop_back();
    if (!cur.empty()) out.push_back(cur);
  }
  return out;
}

ProfileLayout parse_layout(const std::string& s) {
  if (s == "features") return ProfileLayout::features;
  if (s == "predictions") return ProfileLayout::predictions;
  if (s == "embeddings") return ProfileLayout::embeddings;
  throw std::invalid_argument("--layout must be features, predictions or embeddings");
}

std::string base_name(const std::string& p) {
  const auto k = p.find_last_of('/');
  return k == std::string::npos ? p : p.substr(k + 1);
}

struct BuildArgs {
  std::string input, output, features, categorical, numeric, layout = "features";
  std::uint32_t bins = 256;
  std::uint32_t max_categories = 64;
};

ReferenceProfile profile_from_matrix(const Matrix& m, const std::string& origin, const BuildArgs& a) {
  ProfileOptions o;
  o.layout = parse_layout(a.layout);
  o.bins = a.bins;
  o.max_categories = a.max_categories;
  o.categorical = split_list(a.categorical);
  o.numeric = split_list(a.numeric);
  o.dtype = m.dtype;
  o.row_shape = m.row_shape;
  o.source = "file:" + base_name(origin);
  auto names = a.features.empty() ? m.names : split_list(a.features);
  return build_profile(m.values, m.cols, names, o);
}

int run_build(const BuildArgs& a) {
  const Matrix m = read_array(a.input);
  const auto p = profile_from_matrix(m, a.input, a);
  save_profile(p, a.output);
  std::size_t cat = 0;
  for (const auto& f : p.features) cat += f.kind == FeatureKind::categorical;
  std::printf("wrote %s: %zu rows, %zu features (%zu categorical), layout %s\n", a.output.c_str(), m.rows,
              p.features.size(), cat, std::string(layout_name(p.layout)).c_str());
  // What this reference can detect at the default window (5,000 records) and thresholds.
  const DriftSettings ds;
  std::size_t small = 0;
  for (const auto& f : p.features) {
    if (!f.enabled || f.noise.empty()) continue;
    const bool num = f.kind == FeatureKind::numeric;
    const char* method = num ? "wasserstein" : "linf";
    NoiseMoments nm;
    const double n_ref = [&] {
      double s = 0;
      if (num) for (auto c : f.counts) s += static_cast<double>(c);
      else { for (auto c : f.category_counts) s += static_cast<double>(c); s += static_cast<double>(f.other_count); }
      return s;
    }();
    if (!noise_moments(f.noise, method, n_ref, 5000, nm)) continue;
    const double floor = noise_floor(nm, method, ds.noise_z);
    const double thr = ds.threshold(method);
    if (floor > thr) {
      if (small++ < 10) {
        std::printf("  %s: with windows of 5000, %s decides only above %.3g (noise floor of %.0f reference values; threshold %.3g)%s\n",
                    f.name.c_str(), num ? "W1/sd (mean shift in sd)" : "L-inf (share change)", floor, n_ref, thr,
                    floor > ds.max_floor_ratio * thr ? ": too small to decide" : "");
      }
    }
  }
  if (small > 10) std::printf("  ... and %zu more features whose reference is small for the thresholds\n", small - 10);
  return 0;
}

struct DriftArgs {
  std::string reference, current, config, stream = "offline", features, layout = "features";
  std::string categorical, numeric;  // feature kinds when --reference is raw data
  std::uint64_t window_records = 0;
  bool json = false, fail_on_drift = false, all_methods = false;
};

bool is_profile_path(const std::string& p) {
  auto ends = [&](const char* s) {
    const std::string suf(s);
    return p.size() >= suf.size() && p.compare(p.size() - suf.size(), suf.size(), suf) == 0;
  };
  return !(ends(".npy") || ends(".csv") || ends(".tsv"));
}

std::string cell(double v, int width, int prec = 4) {
  char buf[64];
  if (std::isnan(v)) std::snprintf(buf, sizeof buf, "%*s", width, "-");
  else std::snprintf(buf, sizeof buf, "%*.*g", width, prec, v);
  return buf;
}

int run_drift(const DriftArgs& a) {
  std::shared_ptr<const ReferenceProfile> ref;
  if (is_profile_path(a.reference)) {
    ref = std::make_shared<const ReferenceProfile>(load_profile(a.reference));
  } else {
    BuildArgs b;
    b.layout = a.layout;
    b.features = a.features;
    b.categorical = a.categorical;
    b.numeric = a.numeric;
    ref = std::make_shared<const ReferenceProfile>(profile_from_matrix(read_array(a.reference), a.reference, b));
  }
  const Matrix cur = read_array(a.current);
  EngineConfig cfg;
  if (!a.config.empty()) {
    auto root = core::load_file(a.config);
    core::ConfigSection top(root, a.config, "");
    auto sec = top.child("detectors");
    cfg = parse_engine_config(sec);
  }
  StreamSettings st = cfg.settings_for(a.stream);
  st.window_records = a.window_records ? a.window_records : std::max<std::uint64_t>(cur.rows, 10);
  st.window_time = std::chrono::nanoseconds(0);
  st.min_window_records = 1;
  st.reference.clear();
  cfg.streams.clear();
  cfg.streams.emplace_back(a.stream, st);
  cfg.max_features_per_stream = std::max<std::uint32_t>(cfg.max_features_per_stream, static_cast<std::uint32_t>(ref->features.size()));
  DetectorEngine engine(cfg);
  engine.set_reference(a.stream, ref, a.reference);

  core::StreamInfo info;
  info.name = a.stream;
  info.component = "offline";
  info.kind = ref->layout == ProfileLayout::predictions ? format::StreamKind::predictions
              : ref->layout == ProfileLayout::embeddings ? format::StreamKind::embeddings
                                                         : format::StreamKind::features;
  if (!a.features.empty()) info.feature_names = split_list(a.features);
  else if (cur.names.size() == cur.cols) info.feature_names = cur.names;
  const auto dtype_of = [](const std::string& d) {
    for (std::uint16_t t = 1; t <= format::kDTypeMax; ++t) {
      if (format::dtype_name(static_cast<format::DType>(t)) == d) return static_cast<format::DType>(t);
    }
    return format::DType::float64;
  };
  const auto now = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                  std::chrono::system_clock::now().time_since_epoch()).count());
  core::DecodedBatch b;
  b.stream = &info;
  b.dtype = dtype_of(cur.dtype);
  b.row_shape = cur.row_shape;
  b.cols = cur.cols;
  b.timestamp_ns = now;
  constexpr std::size_t kBatch = 4096;
  for (std::size_t r = 0; r < cur.rows; r += kBatch) {
    b.rows = std::min(kBatch, cur.rows - r);
    b.values = std::span<const double>(cur.values.data() + r * cur.cols, b.rows * cur.cols);
    b.seq = r / kBatch;
    engine.on_batch(b);
  }
  engine.flush(now);
  const auto snap = engine.snapshot();
  const DetectorStreamSnapshot* ss = snap->streams.empty() ? nullptr : snap->streams.front().get();
  bool drift = false;
  for (const auto& f : snap->open_findings) {
    drift |= f.kind == FindingKind::drift || f.kind == FindingKind::prediction_drift || f.kind == FindingKind::embedding_drift;
  }
  if (a.json) {
    nlohmann::json out;
    out["reference"] = a.reference;
    out["current"] = a.current;
    out["rows"] = cur.rows;
    out["drift_detected"] = drift;
    out["findings"] = nlohmann::json::array();
    for (const auto& f : snap->open_findings) out["findings"].push_back(to_json(f));
    for (const auto& f : snap->closed_findings) out["findings"].push_back(to_json(f));
    out["stream"] = ss ? to_json(*ss) : nlohmann::json(nullptr);
    std::cout << out.dump(1) << "\n";
  } else {
    std::printf("reference %s (%s, %llu rows)  current %s (%zu rows)\n", a.reference.c_str(), ref->source.c_str(),
                static_cast<unsigned long long>(ref->rows), a.current.c_str(), cur.rows);
    if (ss && ss->features) {
      std::printf("%-24s %-11s %-7s %9s %9s %9s %9s %9s %10s %13s %7s %7s\n", "feature", "kind", "drift", "W1/sd", "PSI",
                  "KS", "JS", "L-inf", "p-value", "min detect.", "nan%", "range%");
      std::vector<std::string> notes;
      for (const auto& r : *ss->features) {
        double w = NAN, psi = NAN, ks = NAN, js = NAN, linf = NAN, p = NAN;
        for (const auto& m : r.scores) {
          if (m.method == "wasserstein") w = m.score;
          if (m.method == "psi") psi = m.score;
          if (m.method == "ks") ks = m.score;
          if (m.method == "ks" && r.kind == FeatureKind::numeric) p = m.p_value;
          if (m.method == "linf") linf = m.score;
          if (m.method == "chi2") p = m.p_value;
          if (m.method == "js") js = m.score;
        }
        std::string mde = "-";
        if (!std::isnan(r.min_detectable)) {
          mde = (r.min_detectable_method == "wasserstein" ? "W1 " : r.min_detectable_method == "linf" ? "Linf " : std::string(r.min_detectable_method) + " ") +
                cell(r.min_detectable, 1, 3);
        }
        std::printf("%-24.24s %-11s %-7s %s %s %s %s %s %s %13s %s %s\n", r.name.c_str(), std::string(feature_kind_name(r.kind)).c_str(),
                    !r.enabled ? "off" : r.drifted ? "YES" : "no", cell(w, 9).c_str(), cell(psi, 9).c_str(),
                    cell(ks, 9).c_str(), cell(js, 9).c_str(), cell(linf, 9).c_str(), cell(p, 10, 3).c_str(), mde.c_str(),
                    cell(100 * r.nan_ratio, 7, 3).c_str(), cell(100 * r.out_of_range_ratio, 7, 3).c_str());
        if (const auto note = core::power_note(r); !note.empty()) notes.push_back(r.name + ": " + note);
      }
      std::printf("(p-value: KS for numeric features, chi-squared for categorical ones; min detect.: the smallest W1/sd\n"
                  " (mean shift in sd) or L-inf (share change) this reference and window can decide: max(threshold, noise floor))\n");
      for (const auto& n : notes) std::printf("NOTE %s\n", n.c_str());
    }
    if (snap->open_findings.empty()) std::printf("no findings\n");
    for (const auto& f : snap->open_findings) {
      std::printf("FINDING %s/%s [%s]: %s\n", std::string(finding_kind_name(f.kind)).c_str(), f.reason.c_str(),
                  std::string(severity_name(f.severity)).c_str(), f.summary.c_str());
    }
  }
  return drift && a.fail_on_drift ? kExitDrift : 0;
}

template <typename F>
void guarded(int& exit_code, F&& f) {
  try {
    exit_code = f();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mltap: %s\n", e.what());
    exit_code = 1;
  }
}

}  // namespace

void add_detector_commands(CLI::App& app, int& exit_code) {
  auto* profile = app.add_subcommand("profile", "Reference profiles for drift detection");
  profile->require_subcommand(1);
  auto build = std::make_shared<BuildArgs>();
  auto* b = profile->add_subcommand("build", "Build a reference profile from training data (.npy or .csv)");
  b->add_option("--input,-i", build->input, "training data: .npy (any numeric dtype) or .csv")->required();
  b->add_option("--output,-o", build->output, "profile file to write")->required();
  b->add_option("--features", build->features, "feature names, comma separated (default: CSV header or f0,f1,...)");
  b->add_option("--categorical", build->categorical, "features to treat as categorical, comma separated");
  b->add_option("--numeric", build->numeric, "features to treat as numeric, comma separated");
  b->add_option("--layout", build->layout, "features, predictions or embeddings")->capture_default_str();
  b->add_option("--bins", build->bins, "fine bins per numeric feature")->check(CLI::Range(2, 4096))->capture_default_str();
  b->add_option("--max-categories", build->max_categories, "tracked categories per categorical feature")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  b->callback([build, &exit_code] { guarded(exit_code, [&] { return run_build(*build); }); });

  auto drift = std::make_shared<DriftArgs>();
  auto* d = app.add_subcommand("drift", "Compare data with a reference using the agent's detectors");
  d->add_option("--reference,-r", drift->reference, "profile file, or .npy/.csv training data")->required();
  d->add_option("--current,-c", drift->current, "data to check: .npy or .csv")->required();
  d->add_flag("--json", drift->json, "print JSON (findings and per-feature results)");
  d->add_option("--window-records", drift->window_records, "compare windows of this many rows (default: the whole file)");
  d->add_option("--config", drift->config, "YAML file with a detectors: section (thresholds, methods)");
  d->add_option("--stream", drift->stream, "stream name for per-stream settings in --config")->capture_default_str();
  d->add_option("--features", drift->features, "feature names of the current data, comma separated");
  d->add_option("--layout", drift->layout, "layout when --reference is raw data")->capture_default_str();
  d->add_option("--categorical", drift->categorical, "when --reference is raw data: features to treat as categorical");
  d->add_option("--numeric", drift->numeric, "when --reference is raw data: features to treat as numeric");
  d->add_flag("--fail-on-drift", drift->fail_on_drift, "exit with status 3 when drift is found");
  d->callback([drift, &exit_code] { guarded(exit_code, [&] { return run_drift(*drift); }); });
}

}  // namespace mltap::cli
