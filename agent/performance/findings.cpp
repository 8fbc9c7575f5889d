#include "agent/performance/findings.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include "core/log.hpp"

#include "core/finding_json.hpp"
#include "core/state_store.hpp"

namespace mltap::performance {
namespace {

constexpr std::size_t kMaxClosed = 64;
constexpr std::size_t kMaxTop = 5;

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}

std::string scope_text(const std::string& scope) {
  return scope == "all" ? std::string("all predictions") : scope;
}

}  // namespace

// Acklam's rational approximation (relative error < 1.2e-9), enough for a confidence level.
double normal_quantile(double p) noexcept {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                 1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01,  -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00};
  if (!(p > 0 && p < 1)) return std::nan("");
  constexpr double lo = 0.02425;
  if (p < lo) {
    const double q = std::sqrt(-2 * std::log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - lo) return -normal_quantile(1 - p);
  const double q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

double wilson_upper(double p, std::uint64_t n, double z) noexcept {
  if (n == 0) return 1.0;
  const double nn = static_cast<double>(n), z2 = z * z;
  const double centre = p + z2 / (2 * nn);
  const double spread = z * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  return std::min(1.0, (centre + spread) / (1 + z2 / nn));
}

bool is_drop(const MetricEvidence& e, double baseline, double tolerance) noexcept {
  return std::isfinite(e.upper) && std::isfinite(baseline) && e.upper < baseline - tolerance;
}

AbnormalityLevel classify_inputs(const std::vector<core::InputDrift>& inputs, std::uint32_t many_features,
                                 std::string* detail) {
  std::uint32_t drifted = 0;
  bool analyzed = false, multivariate = false;
  std::string names, multi;
  for (const auto& in : inputs) {
    analyzed = analyzed || in.analyzed;
    drifted += in.drifted_features;
    if (in.multivariate_drift) {
      multivariate = true;
      multi += (multi.empty() ? "" : ", ") + in.stream;
    }
    for (const auto& f : in.drifted) {
      if (names.size() < 200) names += (names.empty() ? "" : ", ") + in.stream + ":" + f;
    }
  }
  AbnormalityLevel level = AbnormalityLevel::unknown;
  std::string text;
  if (multivariate || drifted >= many_features) {
    level = AbnormalityLevel::inputs;
    text = multivariate ? "the input distribution as a whole moved (" + multi + ")"
                        : "the input distribution moved: " + std::to_string(drifted) + " features drifted (" + names + ")";
  } else if (drifted >= 1) {
    level = AbnormalityLevel::feature;
    text = "one feature drifted (" + names + ")";
  } else if (analyzed) {
    level = AbnormalityLevel::concept_shift;
    text = "inputs stable: concept shift (P(Y|X) changed)";
  } else {
    text = "no drift state of the inputs";
  }
  if (detail) *detail = text;
  return level;
}

std::optional<double> PerformanceFindings::baseline(const std::string& stream, const std::string& scope) const {
  const auto it = refs_.find(stream);
  if (it == refs_.end()) return std::nullopt;
  const auto b = it->second.baseline.find(scope);
  if (b == it->second.baseline.end()) return std::nullopt;
  return b->second;
}

void PerformanceFindings::evaluate(const core::PerformanceStreamState& st, const std::string& component,
                                   const StreamSettings* settings,
                                   const std::vector<core::InputDrift>& inputs, std::uint64_t now) {
  const bool classified = st.task == format::Task::binary || st.task == format::Task::multiclass;
  if (!config_.enabled || !classified) {
    decide(st.stream, component, {}, {}, 0, inputs, now);
    return;
  }
  // Windows with enough labels, oldest first.
  std::vector<const core::PerformanceWindow*> judged;
  for (const auto& w : st.windows) {
    if (w.labelled >= config_.min_labels && w.metrics.accuracy) judged.push_back(&w);
  }
  const std::optional<double> floor = settings && settings->floor ? settings->floor : config_.floor;
  Reference& ref = refs_[st.stream];
  std::size_t first_judged = 0;
  if (!floor) {
    if (!ref.pinned) {
      if (judged.size() < config_.reference_windows) return;  // the reference is still forming
      // Pinned: the pooled accuracy of the first reference windows, overall and per slice.
      std::map<std::string, std::pair<double, std::uint64_t>> pooled;  // scope -> (right, n)
      for (std::size_t i = 0; i < config_.reference_windows; ++i) {
        const auto& w = *judged[i];
        pooled["all"].first += *w.metrics.accuracy * static_cast<double>(w.labelled);
        pooled["all"].second += w.labelled;
        for (const auto& s : w.slices) {
          if (!s.metrics.accuracy) continue;
          auto& p = pooled["slice:" + s.value];
          p.first += *s.metrics.accuracy * static_cast<double>(s.labelled);
          p.second += s.labelled;
        }
      }
      for (const auto& [scope, p] : pooled) {
        if (p.second >= config_.min_labels) ref.baseline[scope] = p.first / static_cast<double>(p.second);
      }
      ref.end_ns = judged[config_.reference_windows - 1]->start_unix_ns;
      ref.pinned = true;
    }
    while (first_judged < judged.size() && judged[first_judged]->start_unix_ns <= ref.end_ns) ++first_judged;
  }
  // The newest window without enough labels yet is judged on its label-free estimate (CBPE), when
  // it has one, against the same baseline: the drop is seen before the labels arrive. Its bound is
  // the estimate's band (upper), as the Wilson bound is for realized accuracy.
  if (!st.windows.empty()) {
    const core::PerformanceWindow& newest = st.windows.back();
    const bool after_reference = floor || (ref.pinned && newest.start_unix_ns > ref.end_ns);
    if (newest.labelled < config_.min_labels && after_reference && newest.estimate && newest.estimate->accuracy) {
      const auto& e = *newest.estimate->accuracy;
      std::map<std::string, double> baselines;
      if (floor) baselines["all"] = *floor;
      else if (auto b = ref.baseline.find("all"); b != ref.baseline.end()) baselines["all"] = b->second;
      const std::vector<MetricEvidence> evidence{
          MetricEvidence{"all", "accuracy", e.value, e.upper, newest.estimate->predictions, Basis::estimated}};
      decide(st.stream, component, evidence, baselines, newest.start_unix_ns, inputs, now);
      for (auto& f : open_) {
        if (f.stream == st.stream) f.onset_resolution_ns = static_cast<std::uint64_t>(st.window_ns);
      }
      return;
    }
  }
  if (first_judged >= judged.size()) {
    decide(st.stream, component, {}, {}, 0, inputs, now);
    return;
  }
  const core::PerformanceWindow& w = *judged.back();
  const double z = normal_quantile(config_.confidence);
  std::vector<MetricEvidence> evidence;
  std::map<std::string, double> baselines;
  auto add = [&](const std::string& scope, double acc, std::uint64_t n) {
    evidence.push_back(MetricEvidence{scope, "accuracy", acc, wilson_upper(acc, n, z), n, Basis::realized});
    if (floor) baselines[scope] = *floor;
    else if (auto b = ref.baseline.find(scope); b != ref.baseline.end()) baselines[scope] = b->second;
  };
  add("all", *w.metrics.accuracy, w.labelled);
  for (const auto& s : w.slices) {
    if (s.labelled >= config_.min_labels && s.metrics.accuracy) add("slice:" + s.value, *s.metrics.accuracy, s.labelled);
  }
  decide(st.stream, component, evidence, baselines, w.start_unix_ns, inputs, now);
  // The window's span as the onset's resolution.
  for (auto& f : open_) {
    if (f.stream == st.stream) f.onset_resolution_ns = static_cast<std::uint64_t>(st.window_ns);
  }
}

void PerformanceFindings::close(std::vector<core::Finding>::iterator it, std::uint64_t now) {
  it->closed_unix_ns = now;
  closed_.insert(closed_.begin(), *it);
  if (closed_.size() > kMaxClosed) closed_.pop_back();
  open_.erase(it);
}

void PerformanceFindings::decide(const std::string& stream, const std::string& component,
                                 const std::vector<MetricEvidence>& evidence,
                                 const std::map<std::string, double>& baselines, std::int64_t window_start,
                                 const std::vector<core::InputDrift>& inputs, std::uint64_t now) {
  auto it = std::find_if(open_.begin(), open_.end(), [&](const core::Finding& f) { return f.stream == stream; });
  struct Drop {
    const MetricEvidence* e;
    double baseline;
  };
  std::vector<Drop> drops;
  for (const auto& e : evidence) {
    const auto b = baselines.find(e.scope);
    if (b != baselines.end() && is_drop(e, b->second, config_.tolerance)) drops.push_back({&e, b->second});
  }
  if (drops.empty()) {
    if (it != open_.end()) close(it, now);
    return;
  }
  std::sort(drops.begin(), drops.end(), [](const Drop& a, const Drop& b) {
    return a.baseline - a.e->value > b.baseline - b.e->value;
  });
  std::string level_text;
  const AbnormalityLevel level = classify_inputs(inputs, config_.many_features, &level_text);
  const Drop& worst = drops.front();
  const core::Severity severity = worst.e->upper < worst.baseline - 5 * std::max(config_.tolerance, 0.01)
                                      ? core::Severity::critical
                                      : core::Severity::warning;
  core::Finding f;
  f.stream = stream;
  f.component = component;
  f.kind = core::FindingKind::performance;
  f.reason = std::string(abnormality_name(level));
  f.severity = severity;
  f.updated_unix_ns = now;
  std::string where = scope_text(worst.e->scope);
  if (drops.size() > 1) where += " and " + std::to_string(drops.size() - 1) + " more";
  f.summary = worst.e->metric + " " + fmt(worst.e->value) + " (" + std::string(basis_name(worst.e->basis)) +
              ", upper bound " + fmt(worst.e->upper) + ", n=" + std::to_string(worst.e->n) + ") below baseline " +
              fmt(worst.baseline) + " in " + where + "; " + level_text;
  for (const auto& d : drops) {
    if (f.top.size() == kMaxTop) break;
    core::FeatureEffect fe;
    fe.feature = d.e->scope;
    fe.method = d.e->metric;
    fe.score = d.e->value;
    fe.threshold = d.baseline - config_.tolerance;
    fe.detail = std::string(basis_name(d.e->basis)) + " " + fmt(d.e->value) + ", upper " + fmt(d.e->upper) +
                ", n=" + std::to_string(d.e->n) + ", baseline " + fmt(d.baseline);
    f.top.push_back(std::move(fe));
  }
  for (const auto& e : evidence) {
    if (e.scope == "all") f.window_records = e.n;
  }
  f.onset_unix_ns = window_start > 0 ? static_cast<std::uint64_t>(window_start) : 0;
  f.onset_basis = "window";
  if (it != open_.end()) {
    // A new abnormality level or a severity rise is a material change: a new finding (new id), so
    // that alerting sees it as new; otherwise the open one is updated.
    const bool material = it->reason != f.reason ||
                          static_cast<int>(severity) > static_cast<int>(it->severity);
    if (!material) {
      f.id = it->id;
      f.opened_unix_ns = it->opened_unix_ns;
      f.onset_unix_ns = std::min(it->onset_or_opened(), f.onset_unix_ns ? f.onset_unix_ns : it->onset_or_opened());
      f.supersedes = it->supersedes;
      *it = std::move(f);
      return;
    }
    f.supersedes = it->id;
    close(it, now);
  }
  f.id = next_id_++;
  f.opened_unix_ns = now;
  if (f.onset_unix_ns > now) f.onset_unix_ns = 0;
  open_.push_back(std::move(f));
}

namespace {
constexpr std::string_view kStateName = "performance-findings";
constexpr std::uint32_t kStateVersion = 1;
}  // namespace

void PerformanceFindings::attach_state(std::string dir) {
  state_dir_ = std::move(dir);
  if (state_dir_.empty()) return;
  const core::StateStore store(state_dir_);
  const auto r = store.read(kStateName, kStateVersion);
  if (r.status == core::StateReadResult::Status::unusable) {
    core::log::warn("performance: findings document unusable ({}); findings are decided afresh", r.detail);
  }
  if (r.status != core::StateReadResult::Status::ok) return;
  try {
    const auto j = nlohmann::json::parse(r.data);
    std::map<std::string, Reference> refs;
    for (const auto& [stream, rj] : j.at("baselines").items()) {
      Reference ref;
      ref.pinned = rj.at("pinned").get<bool>();
      ref.end_ns = rj.at("end_ns").get<std::int64_t>();
      for (const auto& [scope, v] : rj.at("baseline").items()) ref.baseline[scope] = v.get<double>();
      refs[stream] = std::move(ref);
    }
    std::vector<core::Finding> open;
    for (const auto& fj : j.at("open")) {
      core::Finding f = core::finding_from_state_json(fj, fj.at("stream").get<std::string>(),
                                                      fj.at("component").get<std::string>());
      if (f.kind != core::FindingKind::performance) throw std::invalid_argument("not a performance finding");
      open.push_back(std::move(f));
    }
    refs_ = std::move(refs);
    open_ = std::move(open);
    next_id_ = std::max(next_id_, j.at("next_id").get<std::uint64_t>());
    for (const auto& f : open_) next_id_ = std::max(next_id_, f.id + 1);
    saved_ = r.data;
    core::log::info("performance: {} open finding(s) and {} baseline(s) restored", open_.size(), refs_.size());
  } catch (const std::exception& e) {
    core::log::warn("performance: findings document not used ({}); findings are decided afresh", e.what());
  }
}

void PerformanceFindings::save_if_changed() {
  if (state_dir_.empty()) return;
  nlohmann::json baselines = nlohmann::json::object();
  for (const auto& [stream, ref] : refs_) {
    baselines[stream] = {{"pinned", ref.pinned}, {"end_ns", ref.end_ns}, {"baseline", ref.baseline}};
  }
  nlohmann::json open = nlohmann::json::array();
  for (const auto& f : open_) {
    auto fj = core::finding_state_json(f);
    fj["stream"] = f.stream;
    fj["component"] = f.component;
    // The update time moves at every evaluation; it alone is no reason to write.
    fj["updated_unix_ns"] = f.opened_unix_ns;
    open.push_back(std::move(fj));
  }
  const std::string doc =
      nlohmann::json{{"next_id", next_id_}, {"baselines", std::move(baselines)}, {"open", std::move(open)}}.dump();
  if (doc == saved_) return;
  std::string error;
  if (!core::StateStore(state_dir_).write(core::StateDocument{std::string(kStateName), kStateVersion, doc}, error)) {
    core::log::warn("performance: findings not kept: {}", error);
    return;
  }
  saved_ = doc;
}

}  // namespace mltap::performance
