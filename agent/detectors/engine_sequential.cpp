// Sequential change detection (docs/detectors.md, "Sequential change"):
//  - CUSUM on every record: per numeric feature, one two-sided chart per target shift d in
//    sequential.shifts, each the likelihood-ratio CUSUM for a mean shift of d reference sd
//    (reference value k = d/2), thresholds calibrated from the reference's own distribution;
//  - Page-Hinkley on block means: at the end of each block of sequential.block_records rows.
#include <algorithm>
#include <cmath>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {
namespace {

// The reference distribution of z = (x - mean) / sd as weighted points: atom bins as one point,
// other fine bins as kSub evenly spaced points (values assumed uniform inside a bin).
constexpr int kSub = 2;

}  // namespace

void reference_points(const NumericReference& r, std::vector<double>& z, std::vector<double>& w) {
  const std::uint32_t bins = r.lookup.bins();
  double total = 0;
  for (std::uint32_t b = 0; b < bins; ++b) {
    const double p = r.cum(b + 1) - r.cum(b);
    if (!(p > 0)) continue;
    const double lo = r.lookup.edge(b), hi = r.lookup.edge(b + 1);
    if (r.atoms[b] || !(hi > lo)) {
      z.push_back((lo - r.mean) / r.sd);
      w.push_back(p);
    } else {
      for (int j = 0; j < kSub; ++j) {
        z.push_back((lo + (hi - lo) * (j + 0.5) / kSub - r.mean) / r.sd);
        w.push_back(p / kSub);
      }
    }
    total += p;
  }
  for (auto& x : w) x /= total;
}

namespace {

void report(EngineState& e, StreamState& s) {
  // One entry per feature and method (the strongest), strongest first.
  std::vector<FeatureEffect> top;
  for (const auto& fe : s.seq_alarms) {
    auto it = std::find_if(top.begin(), top.end(), [&](const FeatureEffect& t) { return t.feature == fe.feature && t.method == fe.method; });
    if (it == top.end()) top.push_back(fe);
    else if (fe.score / fe.threshold > it->score / it->threshold) *it = fe;
  }
  std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) { return a.score / a.threshold > b.score / b.threshold; });
  std::string summary = "sequential change in the mean of " + top.front().feature + " (" + top.front().method + "): " + top.front().detail;
  std::string reason = top.front().method;
  // The records the decision rests on: CUSUM's run since its last reset, or a block.
  const std::uint64_t based_on = top.front().alarm_record > 0
                                     ? top.front().alarm_record - top.front().onset_record + 1
                                     : s.st.sequential.block_records;
  raise_finding(e, s, FindingKind::sequential_change, Severity::warning, std::move(reason), std::move(summary), std::move(top),
                based_on, s.seq_onset);
}

// Keeps the strongest alarm per feature and method since the last window close.
void keep_alarm(StreamState& s, FeatureEffect fe) {
  auto it = std::find_if(s.seq_alarms.begin(), s.seq_alarms.end(),
                         [&](const FeatureEffect& t) { return t.feature == fe.feature && t.method == fe.method; });
  if (it == s.seq_alarms.end()) s.seq_alarms.push_back(std::move(fe));
  else if (fe.score / fe.threshold >= it->score / it->threshold) *it = std::move(fe);
}

}  // namespace

void init_sequential(const SequentialSettings& sq, Feature& f, double detectors) {
  f.cusum.clear();
  const NumericReference& r = f.num;
  const double n_ref = std::max(1.0, f.ref_finite);
  // The reference's mean and sd are estimates from n_ref values, and every record is compared
  // with the same estimates: their errors act as a permanent shift (mean) and scale (sd) of
  // every chart's input. Each chart therefore runs at a reference value widened by
  // reference_sigmas standard errors of the mean, while its threshold is solved for the nominal
  // reference value and raised by reference_sigmas standard errors of the variance: as long as
  // the errors stay within those bounds, the chart sees no more drift towards its threshold, and
  // no larger steps, than the nominal chart calibrated for arl_records (a chart's run length
  // grows with its reference value). The price is paid by small references (for 500 rows the
  // 0.25 sd chart needs a shift of 0.4 sd to move); at 20,000 rows it is a few percent of delay.
  const double arl_blocks = sq.arl_records / static_cast<double>(sq.block_records) * detectors;
  const auto variance_factor = [&](double kurtosis) {
    return 1 + sq.reference_sigmas * std::sqrt(std::max(0.0, kurtosis - 1) / n_ref);
  };
  // Page-Hinkley on block means: Gaussian (block means), so the kurtosis of a mean is ~3.
  const double ph_widen = sq.reference_sigmas * std::sqrt(static_cast<double>(sq.block_records) / n_ref);
  f.ph = PageHinkley(sq.k + ph_widen, variance_factor(3) * cusum_threshold(arl_blocks, sq.k));
  // The standardization is set up whatever the charts: the fast looks use it too (engine_looks).
  f.seq_inv_ref = f.seq_inv = 0;
  if (!r.has_bins || !(r.sd > 0) || !std::isfinite(r.sd)) return;
  std::vector<double> z, w;
  reference_points(r, z, w);
  if (z.empty()) return;
  // Clipping at +-c sd bounds what one outlier can add. Clipped values have another mean and
  // variance: both follow exactly from z's (0 and 1) minus what the clipping removes, which only
  // the tails beyond +-c contribute (so without clipped mass, nothing is approximated).
  const double c = sq.clip;
  double cut1 = 0, cut2 = 0;  // E[z - clip(z)], E[z^2 - clip(z)^2]
  for (std::size_t i = 0; i < z.size(); ++i) {
    const double zc = std::clamp(z[i], -c, c);
    cut1 += w[i] * (z[i] - zc);
    cut2 += w[i] * (z[i] * z[i] - zc * zc);
  }
  const double mu_c = -cut1;
  const double var_c = 1 - cut2 - mu_c * mu_c;
  if (!(var_c > 1e-6)) return;
  const double sd_c = std::sqrt(var_c);
  f.seq_lo = r.mean - c * r.sd;
  f.seq_hi = r.mean + c * r.sd;
  f.seq_center = r.mean + r.sd * mu_c;
  f.seq_inv_ref = 1 / (r.sd * sd_c);
  f.seq_inv = f.seq_inv_ref;
  if (sq.shifts.empty() || sq.method == SequentialMethod::page_hinkley) return;
  // u as the charts see it, and its mirror for the downward side; u's kurtosis (variance 1) sets
  // the standard error of the reference's variance, sqrt((kurtosis - 1) / n_ref).
  std::vector<double> up(z.size()), down(z.size());
  double kurtosis = 0;
  for (std::size_t i = 0; i < z.size(); ++i) {
    up[i] = (std::clamp(z[i], -c, c) - mu_c) / sd_c;
    down[i] = -up[i];
    kurtosis += w[i] * up[i] * up[i] * up[i] * up[i];
  }
  const double widen = sq.reference_sigmas / std::sqrt(n_ref) / sd_c;
  const double scale = variance_factor(kurtosis);
  // Each side of each chart gets twice the per-detector run length: sides alarm independently.
  const double arl_side = 2 * std::max(sq.arl_records, 2.0) * detectors;
  for (double d : sq.shifts) {
    const double k = d / 2;
    const double h_up = scale * cusum_threshold_tilted(arl_side, cusum_tilt(up, w, k), k);
    const double h_dn = scale * cusum_threshold_tilted(arl_side, cusum_tilt(down, w, k), k);
    f.cusum.emplace_back(k + widen, h_up, h_dn);
  }
}

void run_cusum(EngineState& e, StreamState& s, const double* m, std::size_t n, std::size_t ms) {
  const bool charts = s.st.sequential.enabled;
  if ((!charts && !s.looks) || n == 0) return;
  const auto& shifts = s.st.sequential.shifts;
  bool alarmed = false;
  for (auto& f : s.feats) {
    if (f.kind != FeatureKind::numeric || !f.enabled || !(f.seq_inv > 0)) continue;
    const double* v = m + f.column;
    const double lo = f.seq_lo, hi = f.seq_hi, center = f.seq_center, inv = f.seq_inv;
    // The chunk's finite values as the charts see them (NaN and Inf are the quality detectors'
    // business), then all charts at once; record by record only when one of them alarms.
    double us[kChunk];
    std::uint64_t recs[kChunk];
    std::size_t count = 0;
    for (std::size_t r = 0; r < n && r < kChunk; ++r) {
      const double x = v[r * ms];
      us[count] = (std::clamp(x, lo, hi) - center) * inv;
      recs[count] = s.record_index + r;
      count += x - x == 0;
    }
    if (s.looks) {  // the fast looks' running sum, at the reference's scale (engine_looks.cpp)
      double sum = 0;
      for (std::size_t i = 0; i < count; ++i) sum += us[i];
      f.look_sum += sum * (f.seq_inv_ref / inv);
      f.look_n += static_cast<std::uint32_t>(count);
    }
    if (!charts || f.cusum.empty()) continue;
    if (Cusum::advance_all(f.cusum, us, recs, count)) {
      for (const auto& ch : f.cusum) f.seq_ratio = std::max(f.seq_ratio, ch.ratio());
      continue;
    }
    for (std::size_t i = 0; i < count; ++i) {
      const double u = us[i];
      const std::uint64_t record = recs[i];
      std::size_t best = f.cusum.size();
      for (std::size_t j = 0; j < f.cusum.size(); ++j) {
        if (f.cusum[j].update(u, record) &&
            (best == f.cusum.size() || f.cusum[j].alarm_score() / f.cusum[j].alarm_threshold() >
                                           f.cusum[best].alarm_score() / f.cusum[best].alarm_threshold())) {
          best = j;
        }
      }
      if (best == f.cusum.size()) continue;
      const Cusum& ch = f.cusum[best];
      // Mean of u over the run ~ S/L + k: the estimated shift, back in the feature's units.
      const double run = static_cast<double>(ch.alarm_record() - ch.onset_record() + 1);
      const double shift = (ch.alarm_score() / run + ch.k()) / inv * (ch.last_alarm_up() ? 1 : -1);
      FeatureEffect fe;
      fe.feature = f.name;
      fe.method = "cusum";
      fe.score = ch.alarm_score();
      fe.threshold = ch.alarm_threshold();
      fe.alarm_record = ch.alarm_record();
      fe.onset_record = ch.onset_record();
      // The onset as a time: the finding's onset is the earliest alarm's since the last window
      // close; a window drift on this feature dates itself from its first alarm of the run.
      const Onset on = s.clock.at(ch.onset_record(), s.rec_ns, "cusum");
      if (f.alarm_onset_ns == 0 || f.alarm_onset_ns < s.prev_window_first_ns) f.alarm_onset_ns = on.unix_ns;
      if (on.unix_ns != 0 && (s.seq_onset.unix_ns == 0 || on.unix_ns < s.seq_onset.unix_ns)) s.seq_onset = on;
      fe.detail = std::string(ch.last_alarm_up() ? "mean up: " : "mean down: ") + fmt(f.num.mean) + " -> " +
                  fmt(f.num.mean + shift) + " over " + fmt(run) + " records since record " +
                  std::to_string(ch.onset_record()) + " (chart for " + fmt(shifts[best]) + " sd)";
      f.seq_ratio = std::max(f.seq_ratio, 1.0);
      keep_alarm(s, std::move(fe));
      for (auto& other : f.cusum) other.reset();  // every chart restarts after an alarm
      alarmed = true;
    }
    for (const auto& ch : f.cusum) f.seq_ratio = std::max(f.seq_ratio, ch.ratio());
  }
  if (alarmed) report(e, s);
}

void end_block(EngineState& e, StreamState& s) {
  s.block_rows = 0;
  s.block_ns = s.rec_ns - std::min(s.rec_ns, s.block_first_ns);
  const auto method = s.st.sequential.method;
  bool alarmed = false;
  for (auto& f : s.feats) {
    if (f.kind != FeatureKind::numeric) continue;
    auto& w = f.ncur;
    const std::uint64_t n = w.block_n;
    const double dev = n ? w.block_sum / static_cast<double>(n) : 0;
    w.block_sum = 0;
    w.block_n = 0;
    if (!f.enabled || !s.st.sequential.enabled) continue;
    // A variance increase must not look like a mean shift: the CUSUM's scale follows the larger
    // of the reference sd and the previous window's.
    const double ratio = f.has_prev && f.num.sd > 0 ? f.nprev.sd() / f.num.sd : 1;
    f.seq_inv = f.seq_inv_ref / std::max(1.0, std::isfinite(ratio) ? ratio : 1.0);
    if (method == SequentialMethod::cusum || n < std::max<std::uint64_t>(2, s.st.sequential.block_records / 2)) continue;
    double sigma = f.num.sd;
    if (f.has_prev) sigma = std::max(sigma, f.nprev.sd());
    if (!(sigma > 0)) continue;
    const double z = dev * std::sqrt(static_cast<double>(n)) / sigma;
    auto& det = f.ph;
    // A side at 0 before this block: if it alarms later, the change began with this block.
    if (det.upper() <= 0) f.ph_since[0] = s.block_first_ns;
    if (det.lower() <= 0) f.ph_since[1] = s.block_first_ns;
    if (det.update(z)) {
      const std::uint64_t onset = f.ph_since[det.last_alarm_up() ? 0 : 1];
      if (onset != 0 && (s.seq_onset.unix_ns == 0 || onset < s.seq_onset.unix_ns)) {
        s.seq_onset = {onset, "page_hinkley", 2 * s.block_ns};
      }
      FeatureEffect fe;
      fe.feature = f.name;
      fe.method = "page_hinkley";
      fe.score = det.alarm_score();
      fe.threshold = det.threshold();
      fe.detail = std::string(det.last_alarm_up() ? "mean up: " : "mean down: ") + fmt(f.num.mean) + " -> " +
                  fmt(f.num.mean + dev) + " over " + std::to_string(n) + " records (z=" + fmt(z) + ")";
      f.seq_ratio = std::max(f.seq_ratio, 1.0);
      keep_alarm(s, std::move(fe));
      alarmed = true;
    } else {
      f.seq_ratio = std::max(f.seq_ratio, det.score() / det.threshold());
    }
  }
  if (alarmed) report(e, s);
}

}  // namespace mltap::detectors
