// CUSUM and Page-Hinkley on block means: at the end of each block of sequential.block_records
// rows, each numeric feature's standardized block mean updates its detectors.
#include <algorithm>
#include <cmath>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {

void end_block(EngineState& e, StreamState& s) {
  s.block_rows = 0;
  s.block_ns = s.rec_ns - std::min(s.rec_ns, s.block_first_ns);
  const auto method = s.st.sequential.method;
  for (auto& f : s.feats) {
    if (f.kind != FeatureKind::numeric) continue;
    auto& w = f.ncur;
    const std::uint64_t n = w.block_n;
    const double dev = n ? w.block_sum / static_cast<double>(n) : 0;
    w.block_sum = 0;
    w.block_n = 0;
    if (!f.enabled || !s.st.sequential.enabled || n < std::max<std::uint64_t>(2, s.st.sequential.block_records / 2)) continue;
    double sigma = f.num.sd;
    if (f.has_prev) sigma = std::max(sigma, f.nprev.sd());
    if (!(sigma > 0)) continue;
    const double z = dev * std::sqrt(static_cast<double>(n)) / sigma;
    auto check = [&](auto& det, const char* name, std::uint64_t (&since)[2]) {
      // A side at 0 before this block: if it alarms later, the change began with this block.
      if (det.upper() <= 0) since[0] = s.block_first_ns;
      if (det.lower() <= 0) since[1] = s.block_first_ns;
      if (det.update(z)) {
        const std::uint64_t onset = since[det.last_alarm_up() ? 0 : 1];
        if (&since == &f.cusum_since && (f.alarm_onset_ns == 0 || f.alarm_onset_ns < s.prev_window_first_ns))
          f.alarm_onset_ns = onset;
        if (onset != 0 && (s.seq_onset.unix_ns == 0 || onset < s.seq_onset.unix_ns)) s.seq_onset = {onset, name, 2 * s.block_ns};
        FeatureEffect fe;
        fe.feature = f.name;
        fe.method = name;
        fe.score = det.alarm_score();
        fe.threshold = det.threshold();
        fe.detail = std::string(det.last_alarm_up() ? "mean up: " : "mean down: ") + fmt(f.num.mean) + " -> " +
                    fmt(f.num.mean + dev) + " over " + std::to_string(n) + " records (z=" + fmt(z) + ")";
        f.seq_ratio = std::max(f.seq_ratio, 1.0);
        auto it = std::find_if(s.seq_alarms.begin(), s.seq_alarms.end(),
                               [&](const FeatureEffect& t) { return t.feature == fe.feature && t.method == fe.method; });
        if (it == s.seq_alarms.end()) s.seq_alarms.push_back(std::move(fe));
        else if (fe.score / fe.threshold >= it->score / it->threshold) *it = std::move(fe);
      } else {
        f.seq_ratio = std::max(f.seq_ratio, det.score() / det.threshold());
      }
    };
    if (method != SequentialMethod::page_hinkley) check(f.cusum, "cusum", f.cusum_since);
    if (method != SequentialMethod::cusum) check(f.ph, "page_hinkley", f.ph_since);
  }
  if (!s.seq_alarms.empty()) {
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
    raise_finding(e, s, FindingKind::sequential_change, Severity::warning, std::move(reason), std::move(summary), std::move(top),
          s.st.sequential.block_records, s.seq_onset);
  }
}

}  // namespace mltap::detectors
