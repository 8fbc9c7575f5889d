// Fast looks (docs/detectors.md, "Fast looks"): window-based drift without waiting for the window
// to close. Every drift.look_records records, each numeric feature's trailing segments are tested
// against the reference: at level j, the segment since the older of two snapshots taken every
// 2^j x look_records records, so its length stays between 2^j and 2^(j+1) x look_records
// records and a segment that starts just after a change exists at every scale. A segment's
// statistics are differences of running sums (O(1) per segment, no rows kept):
//  - significance: its mean of u (the clipped, standardized values CUSUM sees) against the
//    reference's distribution of u, by the Chernoff bound P(mean >= a) <= exp(-n I(a)) with I
//    the rate function of that distribution (exact for any skew or ties, unlike a normal
//    approximation), a widened by the reference mean's own error; the looks spend a false-alarm
//    probability of look_records / sequential.arl_records each (Bonferroni across looks and
//    levels): at most one false alarm per arl_records records, the sequential detectors'
//    promise; Benjamini-Hochberg across the features as at a window close;
//  - effect: |mean shift| / sd of the clipped values, a lower bound of the segment's W1 / sd
//    (clipping is 1-Lipschitz and W1 is at least the difference of means), must reach W1's
//    decision level max(threshold, noise floor) at the segment's size, with power, exactly as
//    a window's W1 must.
// A look that finds drift opens the stream's drift finding (method "segment_mean"); while that
// finding is open, looks only roll their snapshots (window closes update it).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {
namespace {

// Two-sided normal tail probability of |z|.
double two_sided_p(double z) noexcept { return std::erfc(std::abs(z) / std::sqrt(2.0)); }

// The |z| whose two-sided tail probability is alpha (bisection; once per stream setup).
double z_for(double alpha) noexcept {
  double lo = 0, hi = 40;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (two_sided_p(mid) > alpha ? lo : hi) = mid;
  }
  return hi;
}

std::uint64_t level_scale(const StreamState& s, std::size_t j) noexcept { return (2 * s.look_every) << j; }

// Chernoff bound on P(mean of n draws of u >= a) (side +1) or <= -a (side -1), u distributed as
// in the reference: exp(-n sup_theta(theta a - log E exp(theta side u))). Computed only for
// segments past the normal prescreen (rare without a change).
double chernoff_p(const Feature& f, double a, double n, int side) {
  std::vector<double> z, w;
  reference_points(f.num, z, w);
  double top = -INFINITY;
  for (auto& x : z) {
    x = side * (std::clamp(f.num.mean + x * f.num.sd, f.seq_lo, f.seq_hi) - f.seq_center) * f.seq_inv_ref;
    top = std::max(top, x);
  }
  if (z.empty()) return 1;
  if (a >= top) return 0;
  // E_theta[u] - a is increasing in theta: bisection for its root, then the rate there.
  const auto tilted = [&](double theta, double& log_m) {
    double m = -INFINITY;
    for (double x : z) m = std::max(m, theta * x);
    double sum = 0, first = 0;
    for (std::size_t i = 0; i < z.size(); ++i) {
      const double e = w[i] * std::exp(theta * z[i] - m);
      sum += e;
      first += e * z[i];
    }
    log_m = m + std::log(sum);
    return first / sum;
  };
  double lo = 0, hi = 1, log_m = 0;
  while (tilted(hi, log_m) < a && hi < 1e4) hi *= 2;
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (tilted(mid, log_m) < a ? lo : hi) = mid;
  }
  tilted(lo, log_m);
  const double rate = std::max(0.0, lo * a - log_m);
  return std::exp(-n * rate);
}

struct Candidate {
  double p = 1;  // Bonferroni over the levels
  double effect = 0, level = 0, shift = 0;
  std::uint32_t n = 0;
  std::uint64_t start = 0;  // record index of the segment's first record
  bool any = false;
};

// The segment of feature f since snapshot (j, k): a candidate when significant at the prescreen
// and its effect reaches W1's decision level at its size. with_p false: the two gates only (the
// Chernoff bound, ~100 passes over the reference's points, is the costly part).
void evaluate(const StreamState& s, const Feature& f, std::size_t j, std::size_t k, Candidate& c,
              bool with_p = true) {
  const std::uint32_t n = f.look_n - f.look_snap_n[j][k];
  if (n < 2) return;
  const double dn = static_cast<double>(n);
  const double sum = f.look_sum - f.look_snap_sum[j][k];
  const double var = dn * (1 + dn / std::max(1.0, f.ref_finite));
  if (sum * sum < s.look_z2 * var) return;  // not significant at any Benjamini-Hochberg rank
  const auto& d = s.st.drift;
  NoiseMoments nm;
  double level = d.wasserstein;
  if (f.noise.moments("wasserstein", f.num.n, dn, nm)) {
    const double floor = noise_floor(nm, "wasserstein", d.noise_z);
    if (floor > d.max_floor_ratio * d.wasserstein) return;  // no power at this size
    level = std::max(level, floor);
  }
  const double shift = sum / dn / f.seq_inv_ref;  // mean of clip(x) minus the reference's
  const double effect = std::abs(shift) / f.num.sd;
  if (effect < level) return;
  if (!with_p) {
    c.any = true;
    return;
  }
  // The reference mean's own error widens the spread of the difference by sqrt(1 + n / n_ref).
  const double a = std::abs(sum) / dn / std::sqrt(1 + dn / std::max(1.0, f.ref_finite));
  const double p = std::min(1.0, 2 * chernoff_p(f, a, dn, sum > 0 ? 1 : -1) * static_cast<double>(s.look_levels));
  if (c.any && p >= c.p) return;
  // The segment starts at its snapshot's record (n counts finite values only: fewer with NaNs).
  c = {p, effect, level, shift, n, s.look_at[j][k], true};
}

void raise(EngineState& e, StreamState& s, const std::vector<Candidate>& cand, const std::vector<bool>& reject) {
  std::vector<FeatureEffect> top;
  std::uint32_t analyzed = 0, based_on = 0;
  std::uint64_t start = s.record_index;
  double best = 0;
  for (std::size_t i = 0; i < s.feats.size(); ++i) {
    analyzed += s.feats[i].enabled;
    if (!reject[i]) continue;
    const auto& c = cand[i];
    const auto& f = s.feats[i];
    FeatureEffect fe;
    fe.feature = f.name;
    fe.method = "segment_mean";
    fe.score = c.effect;
    fe.threshold = c.level;
    fe.min_detectable = c.level;
    fe.p_value = c.p;
    fe.onset_record = c.start;            // the segment's first record
    fe.alarm_record = s.record_index - 1;  // the look's last record
    fe.detail = "mean " + fmt(f.num.mean) + " -> " + fmt(f.num.mean + c.shift) + " over the last " +
                std::to_string(c.n) + " records (fast look)";
    top.push_back(std::move(fe));
  }
  std::sort(top.begin(), top.end(), [](const FeatureEffect& a, const FeatureEffect& b) {
    return a.score / a.threshold > b.score / b.threshold;
  });
  for (std::size_t i = 0; i < s.feats.size(); ++i) {  // the strongest feature's segment
    if (reject[i] && cand[i].effect / cand[i].level > best) {
      best = cand[i].effect / cand[i].level;
      based_on = cand[i].n;
      start = cand[i].start;
    }
  }
  const auto drifted = static_cast<std::uint32_t>(top.size());
  const auto& d = s.st.drift;
  if (drifted < d.min_drifted_features || drifted < std::ceil(d.min_drifted_share * analyzed)) return;
  // Severity as a window close would judge this effect (against the threshold: a window's noise
  // floor is below it at the default sizes), so that the close that follows does not re-notify.
  const double worst = top.front().score / d.wasserstein;
  const Severity sev = worst >= 2.5 || drifted * 2 >= std::max<std::uint32_t>(analyzed, 1) ? Severity::critical
                                                                                          : Severity::warning;
  std::string summary = std::to_string(drifted) + " of " + std::to_string(analyzed) +
                        " features drifted (fast look over the last " + std::to_string(based_on) + " records)";
  for (std::size_t i = 0; i < top.size() && i < 3; ++i) {
    summary += (i ? ", " : ": ") + top[i].feature + " " + top[i].method + " " + fmt(top[i].score) +
               " (threshold " + fmt(top[i].threshold) + ")";
  }
  // The change began no later than the segment's first record; CUSUM's estimate when it has one.
  Onset onset = window_onset(s, top.front().feature);
  if (std::strcmp(onset.basis, "cusum") != 0) {
    onset = s.clock.at(start, s.rec_ns, "window");
    onset.resolution_ns = s.rec_ns - std::min(s.rec_ns, onset.unix_ns);  // anywhere in the segment
  }
  raise_finding(e, s, drift_kind(s), sev, "segment_mean", std::move(summary), std::move(top), based_on, onset);
}

}  // namespace

void init_looks(StreamState& s) {
  const auto& d = s.st.drift;
  s.look_every = d.look_records;
  s.look_levels = 0;
  while (s.look_every > 0 && s.look_levels < kLookLevels && level_scale(s, s.look_levels) <= s.st.window_records) ++s.look_levels;
  const bool decides = std::find(d.numeric_methods.begin(), d.numeric_methods.end(), "wasserstein") != d.numeric_methods.end();
  bool numeric = false;
  for (const auto& f : s.feats) numeric |= f.enabled && f.kind == FeatureKind::numeric && f.seq_inv_ref > 0;
  // Confirmation over several windows is the user's choice: fast looks would bypass it.
  s.looks = s.look_levels > 0 && decides && numeric && s.st.confirm_windows <= 1;
  s.look_last = s.record_index;
  s.look_count = 0;
  for (auto& at : s.look_at) at = {s.record_index, s.record_index};
  for (auto& f : s.feats) {
    f.look_sum = 0;
    f.look_n = 0;
    for (auto& x : f.look_snap_sum) x = {0, 0};
    for (auto& x : f.look_snap_n) x = {0, 0};
  }
  if (!s.looks) return;
  // One false alarm per arl_records records at most: each look (every look_records records)
  // spends look_records / arl_records, over its levels (Bonferroni) and features (BH).
  s.look_alpha = std::min(0.5, static_cast<double>(s.look_every) / std::max(1.0, s.st.sequential.arl_records));
  const double z = z_for(s.look_alpha / s.look_levels);
  s.look_z2 = z * z;
}

void look(EngineState& e, StreamState& s) {
  s.look_last = s.record_index;
  if (!s.looks) return;
  ++s.look_count;
  const bool open = s.findings[static_cast<std::size_t>(drift_kind(s))].open;
  if (!open) {
    // Every segment this look tests: (level, older snapshot, feature).
    const auto segments = [&](auto&& fn) {
      for (std::size_t j = 0; j < s.look_levels; ++j) {
        // Larger segments are looked at less often: every 1/8 of their scale at most.
        const std::uint64_t every = std::max<std::uint64_t>(1, level_scale(s, j) / 8 / s.look_every);
        if (s.look_count % every != 0) continue;
        const std::size_t older = s.look_at[j][0] <= s.look_at[j][1] ? 0 : 1;
        if (s.record_index - s.look_at[j][older] < level_scale(s, j) / 2) continue;
        for (std::size_t i = 0; i < s.feats.size(); ++i) {
          const auto& f = s.feats[i];
          if (!f.enabled || f.kind != FeatureKind::numeric || !(f.seq_inv_ref > 0)) continue;
          fn(j, older, i);
        }
      }
    };
    // The gates first: the p-values only when enough features pass them to open a finding
    // (drift.min_drifted_features, min_drifted_share). A lasting drift of fewer features, which
    // never opens one, would otherwise cost the Chernoff bounds at every look.
    // One buffer per thread for every look (a look runs every look_records records of every
    // stream: at 1,000 streams its allocation was a quarter of the looks' cost).
    static thread_local std::vector<Candidate> cand;
    cand.assign(s.feats.size(), Candidate{});
    segments([&](std::size_t j, std::size_t k, std::size_t i) { evaluate(s, s.feats[i], j, k, cand[i], false); });
    std::uint32_t passing = 0, analyzed = 0;
    for (std::size_t i = 0; i < s.feats.size(); ++i) {
      analyzed += s.feats[i].enabled;
      passing += cand[i].any;
    }
    const auto& d = s.st.drift;
    bool any = passing > 0 && passing >= d.min_drifted_features && passing >= std::ceil(d.min_drifted_share * analyzed);
    if (any) {
      cand.assign(s.feats.size(), Candidate{});
      any = false;
      segments([&](std::size_t j, std::size_t k, std::size_t i) {
        evaluate(s, s.feats[i], j, k, cand[i]);
        any |= cand[i].any;
      });
    }
    if (any) {
      std::vector<double> p(s.feats.size(), NAN);
      for (std::size_t i = 0; i < s.feats.size(); ++i) {
        if (s.feats[i].enabled) p[i] = cand[i].p;  // 1 unless a segment qualified
      }
      const auto reject = benjamini_hochberg(p, s.look_alpha);
      if (std::find(reject.begin(), reject.end(), true) != reject.end()) raise(e, s, cand, reject);
    }
  }
  // Roll: a level takes a new snapshot (over its older one) every half of its scale.
  for (std::size_t j = 0; j < s.look_levels; ++j) {
    const std::size_t older = s.look_at[j][0] <= s.look_at[j][1] ? 0 : 1;
    if (s.record_index - s.look_at[j][1 - older] < level_scale(s, j) / 2) continue;
    s.look_at[j][older] = s.record_index;
    for (auto& f : s.feats) {
      f.look_snap_sum[j][older] = f.look_sum;
      f.look_snap_n[j][older] = f.look_n;
    }
  }
}

}  // namespace mltap::detectors
