// Closing a window, in stages: score every feature against the reference and the previous window
// (with its data-quality checks), decide drift for the stream (effect sizes gated by
// Benjamini-Hochberg), measure the embedding mean shift, report the findings, roll the windows.
#include <algorithm>
#include <cmath>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {
namespace {

using core::MethodScore;

// One-sided z statistic of an excess rate over a baseline rate, with both samples' noise.
double rate_z(double rate, double n, double base, double n_base) {
  const double pooled =
      std::clamp((rate * n + base * n_base) / std::max(1.0, n + n_base), 1e-12, 1 - 1e-12);
  const double var = pooled * (1 - pooled) * (1 / std::max(1.0, n) + (n_base > 0 ? 1 / n_base : 0));
  return (rate - base) / std::sqrt(var);
}

// `m` is a string literal: MethodScore::method views it.
void add_score(std::vector<MethodScore>& out, const char* m, double score, const DriftSettings& d,
               const std::vector<std::string>& decision, double p = NAN, double bound = NAN) {
  MethodScore ms;
  ms.method = m;
  ms.score = score;
  ms.threshold = d.threshold(m);
  ms.p_value = p;
  ms.error_bound = bound;
  ms.decides = std::find(decision.begin(), decision.end(), m) != decision.end();
  out.push_back(std::move(ms));
}

// Stage 1b: every score's noise floor and decision level, the feature's minimum detectable
// effect, and the sizes core::power_note says in words what a too small reference cannot decide
// from.
void apply_noise(const Feature& f, const DriftSettings& d, double n_ref, double n_window,
                 FeatureResult& r) {
  const std::string_view main = f.kind == FeatureKind::numeric ? "wasserstein" : "linf";
  const MethodScore* best = nullptr;
  for (auto& ms : r.scores) {
    if (!(ms.threshold > 0)) continue;
    ms.decision_level = ms.threshold;
    NoiseMoments nm;
    if (n_window > 0 && f.noise.moments(ms.method, n_ref, n_window, nm)) {
      ms.noise_floor = noise_floor(nm, ms.method, d.noise_z);
      ms.decision_level = std::max(ms.threshold, ms.noise_floor);
      ms.powered = ms.noise_floor <= d.max_floor_ratio * ms.threshold;
    }
    if (ms.decides && ms.powered && (!best || ms.method == main)) best = &ms;
  }
  if (best) {
    r.min_detectable = best->decision_level;
    r.min_detectable_method = best->method;
  }
  // The note in words (core::power_note) is written from these when someone asks for it.
  r.noise_reference = n_ref;
  r.noise_window = n_window;
  r.max_floor_ratio = d.max_floor_ratio;
}

// The data-quality problems of a window, worst first once sorted.
struct QualityIssues {
  std::vector<FeatureEffect> top;
  std::string reason;  // the check of the worst problem
  double worst = 0;    // (rate - base) / tolerance of the worst problem

  void flag(FeatureResult& r, const Feature& f, const char* check, double rate, double base,
            double tol, std::string detail) {
    r.quality_flags.push_back(check);
    FeatureEffect fe{f.name, check, rate, base + tol, NAN, std::move(detail)};
    const double ratio = (rate - base) / std::max(tol, 1e-12);
    if (ratio > worst) {
      worst = ratio;
      reason = check;
    }
    top.push_back(std::move(fe));
  }
};

// Counts of the window's values of one feature, whatever its kind.
struct ValueCounts {
  std::uint64_t values = 0, nan = 0, inf = 0, finite = 0;
};

template <typename Window>
ValueCounts counts_of(const Window& w) {
  return {w.values, w.nan, w.pos_inf + w.neg_inf, w.finite};
}

// Numeric feature: scores against the reference and the previous window, range and constancy.
// Returns the KS p-value.
double score_numeric(const Feature& f, const StreamSettings& st, FeatureResult& r, ValueCounts& n,
                     QualityIssues& quality) {
  const auto& w = f.ncur;
  n = counts_of(w);
  r.ref_mean = f.num.mean;
  r.ref_sd = f.num.sd;
  r.mean = w.mean(f.num.mean);
  r.sd = w.sd();
  r.min = n.finite ? w.min : NAN;
  r.max = n.finite ? w.max : NAN;
  const auto& d = st.drift;
  const auto sc = compare_numeric(f.num, w, d.p_value_max_n);
  const auto& dm = d.numeric_methods;
  // Exact capacities: 32 features x 1,000 streams of published results (push_back would leave
  // room for 8 scores where there are 5).
  r.scores.reserve(5);
  add_score(r.scores, "wasserstein", sc.wasserstein, d, dm, NAN, sc.wasserstein_bound);
  add_score(r.scores, "psi", sc.psi, d, dm);
  add_score(r.scores, "ks", sc.ks, d, dm, sc.ks_p_value, sc.ks_bound);
  add_score(r.scores, "js", sc.js, d, dm);
  add_score(r.scores, "hellinger", sc.hellinger, d, dm);
  apply_noise(f, d, f.num.n, static_cast<double>(w.finite), r);
  if (f.has_prev) {
    const auto pv = compare_numeric_windows(f.num, f.nprev, w);
    r.previous.reserve(3);
    add_score(r.previous, "wasserstein", pv.wasserstein, d, {});
    add_score(r.previous, "psi", pv.psi, d, {});
    add_score(r.previous, "ks", pv.ks, d, {});
  }
  const auto& q = st.quality;
  r.out_of_range_ratio =
      n.finite ? static_cast<double>(w.out_of_range()) / static_cast<double>(n.finite) : 0;
  if (n.finite > 0) {
    const double base = f.num.has_bins ? 2.0 / (f.ref_finite + 1) : 0;
    if (r.out_of_range_ratio - base >= q.out_of_range_rate &&
        rate_z(r.out_of_range_ratio, static_cast<double>(n.finite), base, f.ref_finite) >= q.z) {
      quality.flag(r, f, "out_of_range", r.out_of_range_ratio, base, q.out_of_range_rate,
                   fmt(100 * r.out_of_range_ratio) + "% outside the reference range [" +
                       fmt(f.num.min) + ", " + fmt(f.num.max) + "]");
    }
  }
  if (n.finite >= q.constant_min_values && w.min == w.max && f.num.sd > 0) {
    quality.flag(r, f, "constant", 1, 0, 1,
                 "constant at " + fmt(w.min) + " (reference sd " + fmt(f.num.sd) + ")");
  }
  return sc.ks_p_value;
}

// Categorical feature: scores against the reference and the previous window, unseen and missing
// categories. Returns the chi-squared p-value.
double score_categorical(const Feature& f, const StreamSettings& st, FeatureResult& r,
                         ValueCounts& n, QualityIssues& quality) {
  const auto& w = f.ccur();
  n = counts_of(w);
  r.ref_mean = f.cat().mean;
  r.ref_sd = f.cat().sd;
  if (n.finite) {
    const double cnt = static_cast<double>(n.finite);
    r.mean = f.cat().mean + w.sum / cnt;
    r.sd = std::sqrt(std::max(0.0, w.sumsq / cnt - (w.sum / cnt) * (w.sum / cnt)));
    r.min = w.min;
    r.max = w.max;
  }
  const auto& d = st.drift;
  const auto& q = st.quality;
  const auto sc = compare_categorical(f.cat(), w, d.p_value_max_n);
  const auto& dm = d.categorical_methods;
  r.scores.reserve(6);
  add_score(r.scores, "linf", sc.linf, d, dm);
  add_score(r.scores, "js", sc.js, d, dm);
  add_score(r.scores, "psi", sc.psi, d, dm);
  add_score(r.scores, "chi2", sc.chi2, d, dm, sc.chi2_p_value);
  add_score(r.scores, "cramers_v", sc.cramers_v, d, dm);
  add_score(r.scores, "ks", sc.ks, d, dm, NAN, sc.ks_bound);
  apply_noise(f, d, f.cat().n, static_cast<double>(w.finite), r);
  if (f.has_prev) {
    const auto pv = compare_categorical_windows(f.cat(), f.cprev(), w);
    r.previous.reserve(3);
    add_score(r.previous, "linf", pv.linf, d, {});
    add_score(r.previous, "js", pv.js, d, {});
    add_score(r.previous, "psi", pv.psi, d, {});
  }
  r.unseen_ratio = sc.unseen_share;
  if (n.finite > 0) {
    const double base = f.cat().exhaustive ? 1.0 / (f.ref_finite + 1) : sc.ref_other_share;
    if (sc.unseen_share - base >= q.unseen_rate &&
        rate_z(sc.unseen_share, static_cast<double>(n.finite), base, f.ref_finite) >= q.z) {
      std::string top_new;
      auto items = w.unseen.items();
      for (std::size_t i = 0; i < items.size() && i < 3; ++i)
        top_new += (i ? ", " : "") + fmt(items[i].value);
      quality.flag(r, f, "unseen_category", sc.unseen_share, base, q.unseen_rate,
                   fmt(100 * sc.unseen_share) +
                       "% values outside the reference's categories (e.g. " + top_new + ")");
    }
    if (sc.missing_share >= q.missing_share) {
      quality.flag(
          r, f, "missing_category", sc.missing_share, 0, q.missing_share,
          "categories holding " + fmt(100 * sc.missing_share) + "% of the reference are absent");
    }
  }
  return sc.chi2_p_value;
}

// NaN and Inf rates beyond the reference's, for either kind.
void check_nonfinite(const Feature& f, const QualitySettings& q, const ValueCounts& n,
                     FeatureResult& r, QualityIssues& quality) {
  r.values = n.values;
  if (n.values == 0) return;
  const double nv = static_cast<double>(n.values);
  r.nan_ratio = static_cast<double>(n.nan) / nv;
  r.inf_ratio = static_cast<double>(n.inf) / nv;
  const double ref_nan = f.kind == FeatureKind::numeric ? f.num.nan_rate : f.cat().nan_rate;
  const double ref_inf = f.kind == FeatureKind::numeric ? f.num.inf_rate : f.cat().inf_rate;
  if (r.nan_ratio - ref_nan >= q.nan_rate &&
      rate_z(r.nan_ratio, nv, ref_nan, f.ref_values) >= q.z) {
    quality.flag(r, f, "nan_rate", r.nan_ratio, ref_nan, q.nan_rate,
                 "NaN " + fmt(100 * ref_nan) + "% -> " + fmt(100 * r.nan_ratio) + "%");
  }
  if (r.inf_ratio - ref_inf >= q.inf_rate &&
      rate_z(r.inf_ratio, nv, ref_inf, f.ref_values) >= q.z) {
    quality.flag(r, f, "inf_rate", r.inf_ratio, ref_inf, q.inf_rate,
                 "Inf " + fmt(100 * ref_inf) + "% -> " + fmt(100 * r.inf_ratio) + "%");
  }
}

// The decision method furthest past its threshold.
void pick_strongest_method(FeatureResult& r) {
  for (const auto& ms : r.scores) {
    if (ms.decides && ms.powered && ms.score == ms.score && ms.decision_level > 0) {
      const double ratio = ms.score / ms.decision_level;
      if (ratio > r.max_ratio) {
        r.max_ratio = ratio;
        r.max_method = ms.method;
      }
    }
  }
}

struct WindowScores {
  std::shared_ptr<std::vector<FeatureResult>> results =
      std::make_shared<std::vector<FeatureResult>>();
  std::vector<double> p_values;  // per feature; NaN where none (disabled, or n too large)
  QualityIssues quality;
  std::uint32_t analyzed = 0;
};

// Stage 1: every feature's scores and data-quality checks.
WindowScores score_features(StreamState& s) {
  WindowScores w;
  w.results->reserve(s.feats.size());
  for (auto& f : s.feats) {
    FeatureResult r;
    r.name = f.name;
    r.kind = f.kind;
    r.enabled = f.enabled;
    r.sequential_ratio = f.seq_ratio;
    f.seq_ratio = 0;
    if (!f.enabled) {
      w.results->push_back(std::move(r));
      w.p_values.push_back(NAN);
      continue;
    }
    ++w.analyzed;
    ValueCounts n;
    const double p = f.kind == FeatureKind::numeric ? score_numeric(f, s.st, r, n, w.quality)
                                                    : score_categorical(f, s.st, r, n, w.quality);
    check_nonfinite(f, s.st.quality, n, r, w.quality);
    pick_strongest_method(r);
    w.p_values.push_back(p);
    w.results->push_back(std::move(r));
  }
  return w;
}

struct DriftDecision {
  std::vector<FeatureEffect> top;  // drifted features, strongest first
  std::uint32_t drifted = 0;
};

// What moved in a drifted feature, for people.
std::string drift_detail(const StreamState& s, std::size_t i, const FeatureResult& r) {
  if (r.kind == FeatureKind::numeric) {
    return "mean " + fmt(r.ref_mean) + " -> " + fmt(r.mean) + ", sd " + fmt(r.ref_sd) + " -> " +
           fmt(r.sd);
  }
  const auto& f = s.feats[i];
  const auto sc = compare_categorical(f.cat(), f.ccur(), 0);
  const std::size_t c = sc.largest_change;
  const double refp = f.cat().counts[c] / std::max(1.0, f.cat().n);
  const double curp = f.ccur().finite ? f.ccur().counts[c] / static_cast<double>(f.ccur().finite) : 0;
  const std::string label =
      c < f.cat().categories.size() ? fmt(f.cat().categories[c]) : std::string("other");
  return "share of " + label + ": " + fmt(refp) + " -> " + fmt(curp);
}

// Stage 2: a feature drifted when its strongest effect is over its threshold and, where it has a
// p-value, Benjamini-Hochberg rejects at the configured level.
DriftDecision decide_drift(const StreamState& s, WindowScores& w) {
  DriftDecision out;
  const auto reject = benjamini_hochberg(w.p_values, s.st.drift.fdr);
  for (std::size_t i = 0; i < w.results->size(); ++i) {
    auto& r = (*w.results)[i];
    if (!r.enabled || r.max_ratio < 1) continue;
    if (!std::isnan(w.p_values[i]) && !reject[i]) continue;
    r.drifted = true;
    ++out.drifted;
    FeatureEffect fe;
    fe.feature = r.name;
    fe.method = std::string(r.max_method);
    for (const auto& ms : r.scores) {
      if (ms.method == r.max_method) {
        fe.score = ms.score;
        fe.threshold = ms.decision_level;  // max(threshold, noise floor): the level it decided at
      }
    }
    fe.min_detectable = r.min_detectable;
    fe.p_value = w.p_values[i];
    fe.detail = drift_detail(s, i, r);
    out.top.push_back(std::move(fe));
  }
  std::sort(out.top.begin(), out.top.end(), [](const FeatureEffect& a, const FeatureEffect& b) {
    return a.score / a.threshold > b.score / b.threshold;
  });
  return out;
}

// Stage 3 (embeddings): mean vector shift and cosine distance against the reference mean; the
// window's sums are reset. True when either is over its threshold (then first in `top`).
bool embedding_moved(StreamState& s, std::vector<FeatureEffect>& top) {
  s.emb_shift = s.emb_cos = NAN;
  if (s.layout != ProfileLayout::embeddings || s.win_vec_rows == 0 || s.ref_mean.empty())
    return false;
  const auto& st = s.st;
  const double n = static_cast<double>(s.win_vec_rows);
  double diff2 = 0, dot = 0, nw = 0, nr = 0;
  for (std::size_t j = 0; j < s.mean_dims; ++j) {
    const double mw = s.win_sum[j] / n, mr = s.ref_mean[j];
    diff2 += (mw - mr) * (mw - mr);
    dot += mw * mr;
    nw += mw * mw;
    nr += mr * mr;
  }
  if (s.ref_total_var > 0) s.emb_shift = std::sqrt(diff2 / s.ref_total_var);
  if (nw > 0 && nr > 0) s.emb_cos = 1 - dot / std::sqrt(nw * nr);
  const bool cos_valid = nr > 9 * s.ref_total_var / n;  // reference mean well clear of the noise
  FeatureEffect fe;
  fe.feature = "mean_vector";
  bool moved = false;
  if (s.emb_shift == s.emb_shift && s.emb_shift >= st.embedding.mean_shift) {
    fe.method = "mean_shift";
    fe.score = s.emb_shift;
    fe.threshold = st.embedding.mean_shift;
    moved = true;
  } else if (cos_valid && s.emb_cos == s.emb_cos && s.emb_cos >= st.embedding.cosine) {
    fe.method = "cosine";
    fe.score = s.emb_cos;
    fe.threshold = st.embedding.cosine;
    moved = true;
  }
  if (moved) {
    fe.detail = "mean shift " + fmt(s.emb_shift) + " of the reference spread, cosine distance " +
                fmt(s.emb_cos);
    top.insert(top.begin(), fe);
  }
  std::fill(s.win_sum.begin(), s.win_sum.end(), 0.0);
  s.win_vec_rows = 0;
  return moved;
}

// Stage 4a: the stream's distribution finding (drift, prediction or embedding drift), opened
// after confirm_windows drifted windows in a row. Returns whether this window drifted.
bool report_drift(EngineState& e, StreamState& s, const DriftDecision& drift, bool emb_moved,
                  std::uint32_t analyzed) {
  const auto& st = s.st;
  const auto& d = st.drift;
  const double need_share = std::ceil(d.min_drifted_share * analyzed);
  const bool stream_drift = (drift.drifted >= d.min_drifted_features &&
                             drift.drifted >= need_share && drift.drifted > 0) ||
                            emb_moved;
  const FindingKind kind = drift_kind(s);
  auto& slot = s.findings[static_cast<std::size_t>(kind)];
  if (!stream_drift) {
    settle_finding(e, s, kind, st.clear_windows);
    return false;
  }
  const auto& top = drift.top;
  // The onset is estimated at the first window of the run (where the change showed first).
  if (slot.hits == 0) slot.first_hit_onset_ns = 0;
  if (slot.hits == 0 || slot.first_hit_onset_ns == 0) {
    const Onset o = top.empty() ? window_onset(s, std::string()) : window_onset(s, top.front().feature);
    slot.first_hit_onset_ns = o.unix_ns;
    slot.first_hit_basis = o.basis;
    slot.first_hit_resolution_ns = o.resolution_ns;
  }
  if (++slot.hits < st.confirm_windows) return true;
  const double worst = top.empty() ? 1 : top.front().score / top.front().threshold;
  const Severity sev = worst >= 2.5 || drift.drifted * 2 >= std::max<std::uint32_t>(analyzed, 1)
                           ? Severity::critical
                           : Severity::warning;
  std::string summary =
      std::to_string(drift.drifted) + " of " + std::to_string(analyzed) + " features drifted";
  if (emb_moved) summary = "embedding distribution moved; " + summary;
  for (std::size_t i = 0; i < top.size() && i < 3; ++i) {
    summary += (i ? ", " : ": ") + top[i].feature + " " + top[i].method + " " + fmt(top[i].score) +
               " (threshold " + fmt(top[i].threshold) + ")";
  }
  const std::string reason = top.empty() ? "drift" : top.front().method;
  const auto hits = slot.hits;
  Onset onset{slot.first_hit_onset_ns, slot.first_hit_basis, slot.first_hit_resolution_ns};
  // New features among the top ones supersede an open finding: their change began now-ish.
  const auto unseen = unseen_keys(e, s, kind, top, reason);
  if (!unseen.empty()) onset = window_onset(s, unseen.front());
  raise_finding(e, s, kind, sev, reason, std::move(summary), top, s.window_rows, onset);
  slot.hits = hits;
  return true;
}

// Stage 4b: the data-quality finding, worst problem first.
void report_quality(EngineState& e, StreamState& s, QualityIssues& quality) {
  if (quality.top.empty()) {
    settle_finding(e, s, FindingKind::data_quality, s.st.clear_windows);
    return;
  }
  std::sort(quality.top.begin(), quality.top.end(),
            [](const FeatureEffect& a, const FeatureEffect& b) {
              return (a.score - a.threshold) / a.threshold > (b.score - b.threshold) / b.threshold;
            });
  const Severity sev = quality.worst >= 10 ? Severity::critical : Severity::warning;
  std::string summary = std::to_string(quality.top.size()) +
                        " data-quality problem(s): " + quality.top.front().feature + " " +
                        quality.top.front().detail;
  // Quality is judged per window: the problem showed within this one (its first record).
  raise_finding(e, s, FindingKind::data_quality, sev, quality.reason, std::move(summary),
                std::move(quality.top), s.window_rows,
                Onset{s.window_first_ns, "window", s.rec_ns - std::min(s.rec_ns, s.window_first_ns)});
}

// Stage 4c: schema mismatches that still let records be analyzed, and sequential alarms, are
// raised as they happen; a window without any counts towards closing their findings.
void settle_per_batch_findings(EngineState& e, StreamState& s) {
  if (s.window_mismatch == 0) settle_finding(e, s, FindingKind::schema_change, s.st.clear_windows);
  s.window_mismatch = 0;
  if (s.seq_alarms.empty())
    settle_finding(e, s, FindingKind::sequential_change, s.st.clear_windows);
  s.seq_alarms.clear();
  s.seq_onset = {};
}

// Stage 5: the current window becomes the previous one (a sequential block may span windows).
void roll_windows(StreamState& s) {
  for (auto& f : s.feats) {
    if (f.fleet) {
      fleet_add(*f.fleet, f.kind == FeatureKind::numeric ? f.ncur.counts : f.ccur().counts, f.fleet->closed);
    }
    if (f.kind == FeatureKind::numeric) {
      roll_numeric_window(f.num, f.ncur, f.nprev);
    } else {
      std::swap(f.cprev(), f.ccur());
      f.ccur().reset(f.cat().categories.size());
    }
    f.has_prev = true;
  }
}

}  // namespace

FindingKind drift_kind(const StreamState& s) noexcept {
  return s.layout == ProfileLayout::embeddings    ? FindingKind::embedding_drift
         : s.layout == ProfileLayout::predictions ? FindingKind::prediction_drift
                                                  : FindingKind::drift;
}

void close_window(EngineState& e, StreamState& s) {
  WindowScores scores = score_features(s);
  DriftDecision drift = decide_drift(s, scores);
  const bool emb_moved = embedding_moved(s, drift.top);
  const bool drifted = report_drift(e, s, drift, emb_moved, scores.analyzed);
  report_quality(e, s, scores.quality);
  settle_per_batch_findings(e, s);
  roll_windows(s);
  s.drift_detected = drifted;
  s.drifted = drift.drifted;
  s.results = std::move(scores.results);
  s.last_window_records = s.window_rows;
  s.last_window_end_ns = e.now_ns;
  s.window_rows = 0;
  s.window_start_ns = e.now_ns;
  s.prev_window_first_ns = s.window_first_ns;
  ++s.windows_closed;
  ++e.counters.windows_closed;
  e.dirty = true;
}

}  // namespace mltap::detectors
