#include <algorithm>
#include <cmath>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {
namespace {

ProfileOptions options_for(const StreamSettings& st, const ReferenceProfile* p) {
  ProfileOptions o;
  o.bins = st.drift.bins;
  o.embedding_projections = p && p->embedding ? p->embedding->projections : st.embedding.projections;
  o.embedding_seed = p && p->embedding ? p->embedding->seed : st.embedding.seed;
  o.class_threshold = p ? p->class_threshold : st.class_threshold;
  return o;
}

// The fleet map a feature keeps: only an active one (file references with fleet_bins > 0).
std::unique_ptr<FleetMap> active_fleet(FleetMap m) {
  return m.active() ? std::make_unique<FleetMap>(std::move(m)) : nullptr;
}

NoiseOptions noise_options(const StreamSettings& st) {
  NoiseOptions o;
  o.coarse_bins = st.drift.coarse_bins;
  o.replicates = st.drift.noise_replicates;
  return o;
}

std::size_t chunk_rows(std::size_t cols) {
  // Staging holds at most 256 KiB per stream (64 rows of up to 512 values).
  return std::clamp<std::size_t>(32768 / std::max<std::size_t>(cols, 1), 1, kChunk);
}

}  // namespace

void init_from_profile(EngineState& e, StreamState& s, const ReferenceProfile& p, ReferenceSource source) {
  s.ref_source = source;
  s.ref_rows = p.rows;
  s.ref_dtype = p.dtype;
  if (s.feats.empty()) {
    s.layout = p.layout;
    s.in_cols = p.column_count();
    s.chunk = chunk_rows(s.in_cols);
    s.transform = RowTransform(p.layout, s.in_cols, options_for(s.st, &p));
    const std::size_t cap = std::min<std::size_t>(p.features.size(), e.config.max_features_per_stream);
    s.features_cut = static_cast<std::uint32_t>(p.features.size() - cap);
    e.counters.features_cut += s.features_cut;
    s.feats.resize(cap);
    for (std::size_t i = 0; i < cap; ++i) {
      s.feats[i].name = p.features[i].name;
      s.feats[i].column = static_cast<std::uint32_t>(i);
    }
  }
  std::size_t numeric_enabled = 0;
  for (std::size_t i = 0; i < s.feats.size(); ++i) {
    const auto& fp = p.features[i];
    numeric_enabled += fp.enabled && fp.kind == FeatureKind::numeric;
  }
  const auto& sq = s.st.sequential;
  const double per_feature =
      (sq.method != SequentialMethod::page_hinkley ? static_cast<double>(sq.shifts.size()) : 0.0) +
      (sq.method != SequentialMethod::cusum ? 1.0 : 0.0);
  const double detectors = static_cast<double>(std::max<std::size_t>(1, numeric_enabled)) * per_feature;
  for (std::size_t i = 0; i < s.feats.size(); ++i) {
    auto& f = s.feats[i];
    const auto& fp = p.features[i];
    f.pin.reset();
    f.kind = fp.kind;
    f.enabled = fp.enabled;
    f.ref_values = static_cast<double>(fp.values);
    f.ref_finite = static_cast<double>(fp.finite);
    if (fp.kind == FeatureKind::numeric) {
      f.num = compile_numeric(fp, s.st.drift.coarse_bins, p.rank_error);
      f.fleet = active_fleet(source == ReferenceSource::file && fp.enabled
                                 ? compile_fleet_numeric(fp, f.num, s.st.fleet_bins)
                                 : FleetMap{});
      f.ncur.reset(f.num.lookup.bins());
      f.nprev.reset(f.num.lookup.bins());
      f.categorical.reset();
      init_sequential(sq, f, detectors);
    } else {
      f.categorical = std::make_unique<Feature::Categorical>();
      f.cat() = compile_categorical(fp);
      f.fleet = active_fleet(source == ReferenceSource::file && fp.enabled
                                 ? compile_fleet_categorical(f.cat(), s.st.fleet_bins)
                                 : FleetMap{});
      f.ccur().reset(f.cat().categories.size());
      f.cprev().reset(f.cat().categories.size());
    }
    // The profile's noise estimate, or the engine's own when it has none (a version-1 profile) or
    // was estimated for other coarse bins than this stream's.
    f.noise = NoiseTable(fp.noise.empty() || fp.noise.coarse_bins != s.st.drift.coarse_bins
                             ? (fp.enabled ? estimate_noise(fp, noise_options(s.st)) : NoiseEstimate{})
                             : fp.noise);
    f.has_prev = false;
  }
  if (p.embedding) {
    s.mean_dims = p.embedding->mean.size();
    s.ref_mean = p.embedding->mean;
    s.ref_total_var = p.embedding->total_variance;
    s.win_sum.assign(s.mean_dims, 0.0);
    s.win_vec_rows = 0;
  }
  s.pin_sum = {};
  s.pin_sumsq = {};
  s.fleet_records = ~std::uint64_t{0};
  s.ready = true;
  init_looks(s);
  s.window_rows = 0;
  s.block_rows = 0;
  s.window_start_ns = e.now_ns;
  e.dirty = true;
}

void init_pinning(EngineState& e, StreamState& s, const core::DecodedBatch& b) {
  s.in_cols = b.cols;
  if (!b.stream->row_shape.empty()) {
    std::size_t prod = 1;
    for (auto d : b.stream->row_shape) prod *= d;
    s.in_cols = prod;
  }
  s.chunk = chunk_rows(s.in_cols);
  if (!s.analyzable) return;  // raw or disabled: schema, staleness and throughput only
  if (s.kind == format::StreamKind::embeddings || s.in_cols >= s.st.embedding.min_width) {
    s.layout = ProfileLayout::embeddings;
  } else if (s.kind == format::StreamKind::predictions) {
    s.layout = ProfileLayout::predictions;
  }
  auto opt = options_for(s.st, nullptr);
  s.transform = RowTransform(s.layout, s.in_cols, opt);
  std::vector<std::string> cols;
  if (b.stream->feature_names.size() == s.in_cols) cols = b.stream->feature_names;
  const auto names = s.transform.feature_names(cols);
  const std::size_t cap = std::min<std::size_t>(names.size(), e.config.max_features_per_stream);
  s.features_cut = static_cast<std::uint32_t>(names.size() - cap);
  e.counters.features_cut += s.features_cut;
  s.feats.resize(cap);
  for (std::size_t i = 0; i < cap; ++i) {
    auto& f = s.feats[i];
    f.name = names[i];
    f.column = static_cast<std::uint32_t>(i);
    PinnedOptions po;
    po.bins = s.st.drift.bins;
    if (std::find(s.st.categorical.begin(), s.st.categorical.end(), f.name) != s.st.categorical.end()) po.forced_kind = FeatureKind::categorical;
    if (std::find(s.st.numeric.begin(), s.st.numeric.end(), f.name) != s.st.numeric.end()) po.forced_kind = FeatureKind::numeric;
    if (s.layout == ProfileLayout::predictions && i == s.in_cols) po.forced_kind = FeatureKind::categorical;
    if (s.layout == ProfileLayout::embeddings) po.forced_kind = FeatureKind::numeric;
    f.pin = std::make_unique<PinnedFeatureBuilder>(po);
  }
  s.pin_target = s.st.pin_records;
  s.pin_phase_a = std::max<std::uint64_t>(1, s.pin_target / 4);
  if (s.layout == ProfileLayout::embeddings) {
    s.mean_dims = std::min<std::size_t>(s.in_cols, s.st.embedding.mean_dims);
    s.pin_sum.assign(s.in_cols, 0.0);
    s.pin_sumsq.assign(s.in_cols, 0.0);
  }
}

void finish_pinning(EngineState& e, StreamState& s) {
  ReferenceProfile p;
  p.layout = s.layout;
  p.source = "pinned";
  p.created_unix_ns = e.now_ns;
  p.dtype = s.ref_dtype.empty() ? "float64" : s.ref_dtype;
  p.rows = s.pinned;
  p.rank_error = 0;  // phase-B counts are exact at the bin edges
  p.class_threshold = s.st.class_threshold;
  for (auto& f : s.feats) p.features.push_back(f.pin->finish(f.name));
  if (s.layout == ProfileLayout::predictions && s.in_cols == 1 && p.features.size() > 1) {
    const auto& sc = p.features[0];
    p.features[1].enabled = sc.finite > 0 && sc.min >= 0 && sc.max <= 1;
  }
  if (s.layout == ProfileLayout::embeddings) {
    EmbeddingProfile em;
    em.dims = static_cast<std::uint32_t>(s.in_cols);
    em.projections = s.transform.projections();
    em.seed = s.transform.seed();
    em.rows = s.pin_vec_rows;
    em.mean.assign(s.mean_dims, 0.0);
    if (s.pin_vec_rows > 0) {
      const double n = static_cast<double>(s.pin_vec_rows);
      double tv = 0;
      for (std::size_t j = 0; j < s.in_cols; ++j) {
        const double m = s.pin_sum[j] / n;
        if (j < s.mean_dims) em.mean[j] = m;
        tv += std::max(0.0, s.pin_sumsq[j] / n - m * m);
      }
      em.total_variance = tv;
    }
    p.embedding = std::move(em);
  } else {
    // The raw column names, so that the pinned reference is a complete profile that a restarted
    // agent restores instead of pinning again from data that may have drifted since.
    auto names = s.transform.feature_names(
        s.declared_names.size() == s.in_cols ? s.declared_names : std::vector<std::string>{});
    names.resize(s.in_cols);
    p.columns = std::move(names);
  }
  estimate_profile_noise(p, noise_options(s.st));  // kept in the pinned profile document
  init_from_profile(e, s, p, ReferenceSource::pinned);
  s.pinned_json.clear();
  s.pinned_saved = false;
  try {
    validate_profile(p, "pinned reference of '" + s.name + "'");
    s.pinned_json = profile_to_json_text(p);
  } catch (const ProfileError&) {
    // Not restorable (features cut by max_features_per_stream, duplicate declared names): a
    // restarted agent pins again; the findings are still kept.
  }
  ++s.state_changes;
}

}  // namespace mltap::detectors
