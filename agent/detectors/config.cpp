#include "agent/detectors/config.hpp"

#include <cmath>
#include <cstdlib>

#include <algorithm>
#include <set>

namespace mltap::detectors {

double DriftSettings::threshold(std::string_view m) const noexcept {
  if (m == "psi") return psi;
  if (m == "wasserstein") return wasserstein;
  if (m == "ks") return ks;
  if (m == "js") return js;
  if (m == "hellinger") return hellinger;
  if (m == "linf") return linf;
  return NAN;
}

const StreamSettings& EngineConfig::settings_for(std::string_view stream) const noexcept {
  for (const auto& [name, s] : streams) {
    if (name == stream) return s;
  }
  return defaults;
}

namespace {

using core::ConfigSection;

using std::chrono::nanoseconds;

void methods(ConfigSection& s, const char* key, std::vector<std::string>& out,
             const std::vector<std::string>& allowed) {
  auto v = s.get_string_list(key);
  if (!v) return;
  if (v->empty()) s.fail(key, "needs at least one method");
  std::set<std::string> seen;
  for (const auto& m : *v) {
    if (std::find(allowed.begin(), allowed.end(), m) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      s.fail(key, "unknown method '" + m + "' (one of " + list + ")");
    }
    if (!seen.insert(m).second) s.fail(key, "method '" + m + "' listed twice");
  }
  out = *v;
}

template <typename T>
void set(std::optional<T> v, T& out) {
  if (v) out = *v;
}

StreamSettings parse_stream(ConfigSection& s, const StreamSettings& base, bool top_level) {
  StreamSettings o = base;
  set(s.get_bool("enabled"), o.enabled);
  if (!top_level) {
    set(s.get_string("reference"), o.reference);
  } else if (s.has("reference")) {
    s.fail("reference", "set a reference per stream under detectors.streams.<name>");
  }
  set<std::uint64_t>(s.get_int("pin_records", 100, 100000000), o.pin_records);
  set<std::uint64_t>(s.get_int("window_records", 10, 1'000'000'000), o.window_records);
  set(s.get_duration("window_seconds", 0ns, nanoseconds(std::chrono::hours(24 * 7))), o.window_time);
  set<std::uint64_t>(s.get_int("min_window_records", 1, 1'000'000'000), o.min_window_records);
  if (auto v = s.get_int("confirm_windows", 1, 100)) o.confirm_windows = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_int("clear_windows", 1, 100)) o.clear_windows = static_cast<std::uint32_t>(*v);
  set(s.get_string_list("categorical"), o.categorical);
  set(s.get_string_list("numeric"), o.numeric);
  set(s.get_double("class_threshold", -1e300, 1e300), o.class_threshold);
  if (auto v = s.get_int("fleet_bins", 0, 32)) o.fleet_bins = static_cast<std::uint32_t>(*v);
  if (o.fleet_bins == 1) s.fail("fleet_bins", "must be 0 (off) or at least 2");
  if (o.min_window_records > o.window_records) {
    s.fail("min_window_records", "must not exceed window_records (" + std::to_string(o.window_records) + ")");
  }
  if (o.pin_records < 4) s.fail("pin_records", "too small");

  auto d = s.child("drift");
  methods(d, "numeric_methods", o.drift.numeric_methods, {"wasserstein", "psi", "ks", "js", "hellinger"});
  methods(d, "categorical_methods", o.drift.categorical_methods, {"linf", "js", "psi", "ks"});
  auto th = d.child("thresholds");
  set(th.get_double("psi", 1e-6, 100), o.drift.psi);
  set(th.get_double("wasserstein", 1e-6, 100), o.drift.wasserstein);
  set(th.get_double("ks", 1e-6, 1), o.drift.ks);
  set(th.get_double("js", 1e-6, 1), o.drift.js);
  set(th.get_double("hellinger", 1e-6, 1), o.drift.hellinger);
  set(th.get_double("linf", 1e-6, 1), o.drift.linf);
  th.finish();
  set(d.get_double("fdr", 1e-12, 0.5), o.drift.fdr);
  set(d.get_double("p_value_max_n", 0, 1e12), o.drift.p_value_max_n);
  if (auto v = d.get_int("min_drifted_features", 1, 65536)) o.drift.min_drifted_features = static_cast<std::uint32_t>(*v);
  set(d.get_double("min_drifted_share", 0, 1), o.drift.min_drifted_share);
  if (auto v = d.get_int("bins", 8, 4096)) o.drift.bins = static_cast<std::uint32_t>(*v);
  if (auto v = d.get_int("coarse_bins", 2, 256)) o.drift.coarse_bins = static_cast<std::uint32_t>(*v);
  set(d.get_double("noise_z", 0, 100), o.drift.noise_z);
  set(d.get_double("max_floor_ratio", 1, 1e6), o.drift.max_floor_ratio);
  if (auto v = d.get_int("noise_replicates", 8, 10000)) o.drift.noise_replicates = static_cast<std::uint32_t>(*v);
  if (auto v = d.get_int("look_records", 0, 1 << 20)) o.drift.look_records = static_cast<std::uint64_t>(*v);
  d.finish();

  auto q = s.child("quality");
  set(q.get_double("nan_rate", 0, 1), o.quality.nan_rate);
  set(q.get_double("inf_rate", 0, 1), o.quality.inf_rate);
  set(q.get_double("out_of_range_rate", 0, 1), o.quality.out_of_range_rate);
  set(q.get_double("unseen_rate", 0, 1), o.quality.unseen_rate);
  set(q.get_double("missing_share", 0, 1), o.quality.missing_share);
  set(q.get_double("z", 0, 100), o.quality.z);
  set<std::uint64_t>(q.get_int("constant_min_values", 2, 1'000'000'000), o.quality.constant_min_values);
  q.finish();

  auto sq = s.child("sequential");
  set(sq.get_bool("enabled"), o.sequential.enabled);
  if (auto m = sq.get_enum("method", {"cusum", "page_hinkley", "both"})) {
    o.sequential.method = *m == "cusum" ? SequentialMethod::cusum
                          : *m == "page_hinkley" ? SequentialMethod::page_hinkley
                                                 : SequentialMethod::both;
  }
  if (auto v = sq.get_string_list("shifts")) {
    if (v->empty() || v->size() > 8) sq.fail("shifts", "needs 1 to 8 shifts");
    std::vector<double> shifts;
    for (const auto& t : *v) {
      char* end = nullptr;
      const double d = std::strtod(t.c_str(), &end);
      if (t.empty() || end != t.c_str() + t.size() || !(d >= 0.01 && d <= 100)) {
        sq.fail("shifts", "'" + t + "' is not a shift in (0.01, 100) standard deviations");
      }
      if (std::find(shifts.begin(), shifts.end(), d) != shifts.end()) sq.fail("shifts", "shift " + t + " listed twice");
      shifts.push_back(d);
    }
    o.sequential.shifts = std::move(shifts);
  }
  set(sq.get_double("clip", 1, 1e6), o.sequential.clip);
  set<std::uint64_t>(sq.get_int("block_records", 16, 10'000'000), o.sequential.block_records);
  set(sq.get_double("arl_records", 1e3, 1e18), o.sequential.arl_records);
  set(sq.get_double("k", 0.05, 10), o.sequential.k);
  set(sq.get_double("reference_sigmas", 0, 10), o.sequential.reference_sigmas);
  sq.finish();

  auto st = s.child("staleness");
  set(st.get_bool("enabled"), o.staleness.enabled);
  set(st.get_double("factor", 1, 1e6), o.staleness.factor);
  set(st.get_duration("min_silence", 1ms, nanoseconds(std::chrono::hours(24 * 30))), o.staleness.min_silence);
  if (auto v = st.get_int("min_batches", 2, 1'000'000)) o.staleness.min_batches = static_cast<std::uint32_t>(*v);
  st.finish();

  auto tp = s.child("throughput");
  set(tp.get_bool("enabled"), o.throughput.enabled);
  set(tp.get_duration("period", 1ms, nanoseconds(std::chrono::hours(24))), o.throughput.period);
  set(tp.get_double("factor", 1.01, 1e6), o.throughput.factor);
  if (auto v = tp.get_int("warmup_periods", 1, 10000)) o.throughput.warmup_periods = static_cast<std::uint32_t>(*v);
  set(tp.get_double("min_expected", 0, 1e12), o.throughput.min_expected);
  set(tp.get_double("alpha", 1e-6, 1), o.throughput.alpha);
  tp.finish();

  auto em = s.child("embedding");
  if (auto v = em.get_int("min_width", 2, 65536)) o.embedding.min_width = static_cast<std::uint32_t>(*v);
  if (auto v = em.get_int("projections", 1, 256)) o.embedding.projections = static_cast<std::uint32_t>(*v);
  if (auto v = em.get_int("seed", 0, INT64_MAX)) o.embedding.seed = static_cast<std::uint64_t>(*v);
  if (auto v = em.get_int("mean_dims", 1, 65536)) o.embedding.mean_dims = static_cast<std::uint32_t>(*v);
  set(em.get_double("mean_shift", 1e-6, 100), o.embedding.mean_shift);
  set(em.get_double("cosine", 1e-6, 2), o.embedding.cosine);
  em.finish();
  return o;
}

}  // namespace

EngineConfig parse_engine_config(core::ConfigSection& section) {
  EngineConfig c;
  if (section.is_null()) return c;
  set(section.get_bool("enabled"), c.enabled);
  if (auto v = section.get_int("max_streams", 1, 65536)) c.max_streams = static_cast<std::uint32_t>(*v);
  if (auto v = section.get_int("max_features_per_stream", 1, 65536)) c.max_features_per_stream = static_cast<std::uint32_t>(*v);
  set(section.get_duration("snapshot_interval", 1ms, nanoseconds(std::chrono::minutes(10))), c.snapshot_interval);
  if (auto v = section.get_int("closed_findings_kept", 0, 100000)) c.closed_findings_kept = static_cast<std::uint32_t>(*v);
  if (auto v = section.get_int("top_features", 1, 50)) c.top_features = static_cast<std::uint32_t>(*v);
  c.defaults = parse_stream(section, StreamSettings{}, true);
  for (auto& [name, sub] : section.child_map("streams")) {
    if (name.empty() || name.size() >= 128) sub.fail("", "stream names are 1..127 bytes");
    for (const auto& [other, unused] : c.streams) {
      (void)unused;
      if (other == name) sub.fail("", "stream '" + name + "' configured twice");
    }
    c.streams.emplace_back(name, parse_stream(sub, c.defaults, false));
    sub.finish();
  }
  section.finish();
  return c;
}

std::string default_config_yaml() {
  return R"(detectors:
  enabled: true
  max_streams: 256              # more streams are counted, not analyzed
  max_features_per_stream: 2048 # more features are counted, not analyzed
  snapshot_interval: 250ms      # readers see new results at most this often
  closed_findings_kept: 256
  top_features: 5               # features named in a finding
  pin_records: 20000            # without a reference file: the first records become the reference
  window_records: 5000
  window_seconds: 60s           # 0 = by records only
  min_window_records: 1000      # a time window closes only with this many records
  confirm_windows: 1
  clear_windows: 2
  categorical: []               # force feature kinds when pinning
  numeric: []
  class_threshold: 0.5
  fleet_bins: 10                # per feature, file references only (docs/metrics.md, Fleet); 0 = off
  drift:
    numeric_methods: [wasserstein, psi]
    categorical_methods: [linf, js]
    thresholds: {psi: 0.2, wasserstein: 0.1, ks: 0.1, js: 0.1, hellinger: 0.1, linf: 0.05}
    fdr: 0.01
    p_value_max_n: 100000
    min_drifted_features: 1
    min_drifted_share: 0
    bins: 64                    # fine bins of pinned references (file references keep theirs)
    coarse_bins: 16
    noise_z: 5                  # decide only above max(threshold, noise mean + noise_z sd)
    max_floor_ratio: 5          # a method whose noise floor exceeds 5x its threshold does not decide
    noise_replicates: 64        # bootstrap replicates when the engine estimates a reference's noise
    look_records: 16            # fast looks at trailing segments between window closes; 0 = off
  quality: {nan_rate: 0.005, inf_rate: 0.005, out_of_range_rate: 0.01, unseen_rate: 0.01,
            missing_share: 0.01, z: 5, constant_min_values: 100}
  sequential: {enabled: true, method: both, shifts: [0.25, 0.5, 1], clip: 4, block_records: 512,
               arl_records: 1e9, k: 0.5, reference_sigmas: 3}  # shifts in sd (CUSUM); k, blocks: Page-Hinkley
  staleness: {enabled: true, factor: 5, min_silence: 30s, min_batches: 10}
  throughput: {enabled: true, period: 60s, factor: 4, warmup_periods: 5, min_expected: 20, alpha: 0.1}
  embedding: {min_width: 256, projections: 16, seed: 469971001712, mean_dims: 4096,
              mean_shift: 0.1, cosine: 0.05}
  streams: {}                   # <stream name>: {reference: path, any key above}
)";
}

}  // namespace mltap::detectors
