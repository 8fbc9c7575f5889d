#include "agent/detectors/engine.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>

#include "agent/detectors/binning.hpp"
#include "agent/detectors/stats.hpp"
#include "core/time.hpp"

namespace mltap::detectors {

using core::DetectorSnapshot;
using core::DetectorStreamSnapshot;
using core::FeatureEffect;
using core::FeatureKind;
using core::FeatureResult;
using core::Finding;
using core::FindingKind;
using core::MethodScore;
using core::ReferenceSource;
using core::Severity;

namespace {

constexpr std::size_t kChunk = 64;  // rows processed column-wise at a time
constexpr std::size_t kKinds = 8;
constexpr double kGapMemoryNs = 3600e9;  // the usual interval forgets with a 1 h time constant

std::string fmt(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

bool same_family(std::string_view profile_dtype, format::DType t) {
  auto family = [](std::string_view d) {
    if (d.starts_with("float") || d == "bfloat16") return 0;
    if (d == "bool") return 2;
    return 1;
  };
  return family(profile_dtype) == family(format::dtype_name(t));
}

// One-sided z statistic of an excess rate over a baseline rate, with both samples' noise.
double rate_z(double rate, double n, double base, double n_base) {
  const double pooled = std::clamp((rate * n + base * n_base) / std::max(1.0, n + n_base), 1e-12, 1 - 1e-12);
  const double var = pooled * (1 - pooled) * (1 / std::max(1.0, n) + (n_base > 0 ? 1 / n_base : 0));
  return (rate - base) / std::sqrt(var);
}

struct Feature {
  std::string name;
  FeatureKind kind = FeatureKind::numeric;
  bool enabled = true;
  std::uint32_t column = 0;
  std::unique_ptr<PinnedFeatureBuilder> pin;
  NumericReference num;
  CategoricalReference cat;
  NumericWindow ncur, nprev;
  CategoricalWindow ccur, cprev;
  bool has_prev = false;
  double ref_values = 0, ref_finite = 0;
  Cusum cusum;
  PageHinkley ph;
  double seq_ratio = 0;

  std::size_t memory_bytes() const noexcept {
    std::size_t b = sizeof(*this) + name.capacity();
    if (pin) b += pin->memory_bytes();
    b += num.memory_bytes() + cat.memory_bytes() + ncur.memory_bytes() + nprev.memory_bytes() +
         ccur.memory_bytes() + cprev.memory_bytes();
    return b;
  }
};

struct FindingSlot {
  Finding f;
  bool open = false;
  std::uint32_t hits = 0;
  std::uint32_t clean = 0;
};

}  // namespace

struct DetectorEngine::Stream {
  std::string name, component;
  format::StreamKind kind = format::StreamKind::features;
  StreamSettings st;
  ProfileLayout layout = ProfileLayout::features;
  bool analyzable = true;  // raw streams: schema, staleness, throughput only
  RowTransform transform;
  std::size_t in_cols = 0;
  std::vector<Feature> feats;
  std::uint32_t features_cut = 0;
  // reference
  ReferenceSource ref_source = ReferenceSource::pending;
  std::string ref_path, ref_error;
  std::uint64_t ref_rows = 0;
  std::string ref_dtype;
  bool ready = false;
  std::uint64_t pin_target = 0, pin_phase_a = 0, pinned = 0;
  // schema
  format::DType expected_dtype = format::DType::invalid;
  std::vector<std::uint32_t> expected_shape;
  std::uint64_t window_mismatch = 0;
  std::string mismatch_reason, mismatch_detail;
  // staging (raw rows) and derived rows
  std::vector<double> staging, derived;
  std::size_t staged = 0;
  std::size_t chunk = kChunk;  // rows per column-wise block; fewer for very wide rows
  // windows
  std::uint64_t window_rows = 0, window_start_ns = 0, windows_closed = 0, block_rows = 0;
  std::uint64_t last_window_records = 0, last_window_end_ns = 0;
  // embeddings
  std::size_t mean_dims = 0;
  std::vector<double> ref_mean, win_sum, pin_sum, pin_sumsq;
  double ref_total_var = 0;
  std::uint64_t win_vec_rows = 0, pin_vec_rows = 0;
  double emb_shift = NAN, emb_cos = NAN;
  // time
  std::uint64_t last_arrival = 0, batches = 0;
  double usual_gap = 0;
  std::uint64_t period_start = 0, period_rows = 0;
  double baseline = 0;
  std::uint32_t periods = 0;
  // findings by kind
  std::array<FindingSlot, kKinds> findings;
  std::vector<FeatureEffect> seq_alarms;  // since the last window close
  // totals and results
  std::uint64_t records_total = 0, records_rejected = 0;
  bool drift_detected = false;
  std::uint32_t drifted = 0;
  std::shared_ptr<const std::vector<FeatureResult>> results = std::make_shared<std::vector<FeatureResult>>();

  std::size_t memory_bytes() const noexcept {
    std::size_t b = sizeof(*this) + (staging.capacity() + derived.capacity() + ref_mean.capacity() +
                                     win_sum.capacity() + pin_sum.capacity() + pin_sumsq.capacity()) *
                                        sizeof(double);
    for (const auto& f : feats) b += f.memory_bytes();
    return b;
  }
};

// All the engine's per-stream logic; a friend so that the header stays small.
struct EngineAccess {
  DetectorEngine& e;
  using Stream = DetectorEngine::Stream;

  const EngineConfig& cfg() const { return e.config_; }

  // ---- findings ----------------------------------------------------------------------------
  void raise(Stream& s, FindingKind kind, Severity sev, std::string reason, std::string summary,
             std::vector<FeatureEffect> top, std::uint64_t window_records) {
    auto& slot = s.findings[static_cast<std::size_t>(kind)];
    if (!slot.open) {
      slot.f = Finding{};
      slot.f.id = e.next_finding_id_++;
      slot.f.stream = s.name;
      slot.f.component = s.component;
      slot.f.kind = kind;
      slot.f.opened_unix_ns = e.now_ns_;
      slot.open = true;
      ++e.counters_.findings_opened;
    }
    if (top.size() > cfg().top_features) top.resize(cfg().top_features);
    slot.f.reason = std::move(reason);
    slot.f.severity = sev;
    slot.f.summary = std::move(summary);
    slot.f.top = std::move(top);
    slot.f.window_records = window_records;
    slot.f.updated_unix_ns = e.now_ns_;
    slot.clean = 0;
    e.dirty_ = true;
  }

  void settle(Stream& s, FindingKind kind, std::uint32_t clear_after) {
    auto& slot = s.findings[static_cast<std::size_t>(kind)];
    slot.hits = 0;
    if (!slot.open) return;
    if (++slot.clean < clear_after) return;
    slot.f.closed_unix_ns = std::max<std::uint64_t>(e.now_ns_, 1);
    slot.f.updated_unix_ns = slot.f.closed_unix_ns;
    slot.open = false;
    e.closed_.push_back(slot.f);
    if (e.closed_.size() > cfg().closed_findings_kept) {
      e.closed_.erase(e.closed_.begin(), e.closed_.begin() + static_cast<std::ptrdiff_t>(e.closed_.size() - cfg().closed_findings_kept));
    }
    e.dirty_ = true;
  }

  // ---- setup -------------------------------------------------------------------------------
  static ProfileOptions options_for(const StreamSettings& st, const ReferenceProfile* p) {
    ProfileOptions o;
    o.bins = st.drift.bins;
    o.embedding_projections = p && p->embedding ? p->embedding->projections : st.embedding.projections;
    o.embedding_seed = p && p->embedding ? p->embedding->seed : st.embedding.seed;
    o.class_threshold = p ? p->class_threshold : st.class_threshold;
    return o;
  }

  static std::size_t chunk_rows(std::size_t cols) {
    // Staging holds at most 256 KiB per stream (64 rows of up to 512 values).
    return std::clamp<std::size_t>(32768 / std::max<std::size_t>(cols, 1), 1, kChunk);
  }

  void init_from_profile(Stream& s, const ReferenceProfile& p, ReferenceSource source) {
    s.ref_source = source;
    s.ref_rows = p.rows;
    s.ref_dtype = p.dtype;
    if (s.feats.empty()) {
      s.layout = p.layout;
      s.in_cols = p.column_count();
      s.chunk = chunk_rows(s.in_cols);
      s.transform = RowTransform(p.layout, s.in_cols, options_for(s.st, &p));
      const std::size_t cap = std::min<std::size_t>(p.features.size(), cfg().max_features_per_stream);
      s.features_cut = static_cast<std::uint32_t>(p.features.size() - cap);
      e.counters_.features_cut += s.features_cut;
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
    const double detectors = static_cast<double>(std::max<std::size_t>(1, numeric_enabled)) *
                             (sq.method == SequentialMethod::both ? 2 : 1);
    const double arl_blocks = sq.arl_records / static_cast<double>(sq.block_records) * detectors;
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
        f.ncur.reset(f.num.lookup.bins());
        f.nprev.reset(f.num.lookup.bins());
        const double k = sq.k + sq.reference_sigmas *
                                    std::sqrt(static_cast<double>(sq.block_records) / std::max(1.0, f.ref_finite));
        const double h = cusum_threshold(arl_blocks, k);
        f.cusum = Cusum(k, h);
        f.ph = PageHinkley(k, h);
      } else {
        f.cat = compile_categorical(fp);
        f.ccur.reset(f.cat.categories.size());
        f.cprev.reset(f.cat.categories.size());
      }
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
    s.ready = true;
    s.window_rows = 0;
    s.block_rows = 0;
    s.window_start_ns = e.now_ns_;
    e.dirty_ = true;
  }

  // First batch of a stream without a file reference: decide layout and width, start pinning.
  void init_pinning(Stream& s, const core::DecodedBatch& b) {
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
    const std::size_t cap = std::min<std::size_t>(names.size(), cfg().max_features_per_stream);
    s.features_cut = static_cast<std::uint32_t>(names.size() - cap);
    e.counters_.features_cut += s.features_cut;
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

  void finish_pinning(Stream& s) {
    ReferenceProfile p;
    p.layout = s.layout;
    p.source = "pinned";
    p.created_unix_ns = e.now_ns_;
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
    }
    init_from_profile(s, p, ReferenceSource::pinned);
  }

  // ---- ingest ------------------------------------------------------------------------------
  std::size_t room(const Stream& s) const {
    if (!s.ready) return static_cast<std::size_t>((s.pinned < s.pin_phase_a ? s.pin_phase_a : s.pin_target) - s.pinned);
    const std::uint64_t w = s.st.window_records - s.window_rows;
    const std::uint64_t b = s.st.sequential.block_records - s.block_rows;
    return static_cast<std::size_t>(std::min(w, b));
  }

  void process_chunk(Stream& s, const double* base, std::size_t n, std::size_t stride) {
    const double* m = base;
    std::size_t ms = stride;
    if (s.layout != ProfileLayout::features) {
      const std::size_t w = s.transform.out_columns();
      if (s.derived.size() < s.chunk * w) s.derived.assign(s.chunk * w, 0.0);
      for (std::size_t r = 0; r < n; ++r) s.transform.apply(base + r * stride, s.derived.data() + r * w);
      m = s.derived.data();
      ms = w;
      if (s.layout == ProfileLayout::embeddings) accumulate_vectors(s, base, n, stride);
    }
    if (!s.ready) {
      for (auto& f : s.feats) f.pin->add(m + f.column, n, ms);
      s.pinned += n;
      return;
    }
    for (auto& f : s.feats) {
      if (!f.enabled) continue;
      if (f.kind == FeatureKind::numeric) add_numeric(f.num, f.ncur, m + f.column, n, ms);
      else add_categorical(f.cat, f.ccur, m + f.column, n, ms);
    }
    s.window_rows += n;
    s.block_rows += n;
  }

  void accumulate_vectors(Stream& s, const double* base, std::size_t n, std::size_t stride) {
    for (std::size_t r = 0; r < n; ++r) {
      const double* row = base + r * stride;
      bool ok = true;
      for (std::size_t j = 0; j < s.in_cols && ok; ++j) ok = row[j] - row[j] == 0;
      if (!ok) continue;
      if (!s.ready) {
        ++s.pin_vec_rows;
        for (std::size_t j = 0; j < s.in_cols; ++j) {
          s.pin_sum[j] += row[j];
          s.pin_sumsq[j] += row[j] * row[j];
        }
      } else {
        ++s.win_vec_rows;
        for (std::size_t j = 0; j < s.mean_dims; ++j) s.win_sum[j] += row[j];
      }
    }
  }

  void process_rows(Stream& s, const double* base, std::size_t rows, std::size_t stride) {
    while (rows > 0) {
      const std::size_t take = std::min({rows, s.chunk, room(s)});
      process_chunk(s, base, take, stride);
      base += take * stride;
      rows -= take;
      if (!s.ready) {
        if (s.pinned == s.pin_phase_a) {
          for (auto& f : s.feats) f.pin->fit();
        }
        if (s.pinned >= s.pin_target) finish_pinning(s);
      } else {
        if (s.block_rows >= s.st.sequential.block_records) end_block(s);
        if (s.window_rows >= s.st.window_records) close_window(s);
      }
    }
  }

  void flush_staging(Stream& s) {
    if (s.staged == 0) return;
    const std::size_t n = s.staged;
    s.staged = 0;
    process_rows(s, s.staging.data(), n, s.in_cols);
  }

  void add_rows(Stream& s, const core::DecodedBatch& b) {
    if (!s.analyzable || s.feats.empty()) return;
    const std::size_t cols = s.in_cols;
    if (s.staged == 0 && b.rows >= s.chunk) {
      process_rows(s, b.values.data(), b.rows, cols);
      return;
    }
    if (s.staging.size() < s.chunk * cols) s.staging.assign(s.chunk * cols, 0.0);
    for (std::size_t r = 0; r < b.rows; ++r) {
      std::copy_n(b.values.data() + r * cols, cols, s.staging.data() + s.staged * cols);
      if (++s.staged == s.chunk) flush_staging(s);
    }
  }

  // ---- sequential ----------------------------------------------------------------------------
  void end_block(Stream& s) {
    s.block_rows = 0;
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
      auto check = [&](auto& det, const char* name) {
        if (det.update(z)) {
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
      if (method != SequentialMethod::page_hinkley) check(f.cusum, "cusum");
      if (method != SequentialMethod::cusum) check(f.ph, "page_hinkley");
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
      raise(s, FindingKind::sequential_change, Severity::warning, std::move(reason), std::move(summary), std::move(top),
            s.st.sequential.block_records);
    }
  }

  // ---- window close ------------------------------------------------------------------------
  static void add_score(std::vector<MethodScore>& out, const char* m, double score, const DriftSettings& d,
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

  void close_window(Stream& s) {
    const auto& st = s.st;
    const auto& d = st.drift;
    const auto& q = st.quality;
    auto results = std::make_shared<std::vector<FeatureResult>>();
    results->reserve(s.feats.size());
    std::vector<double> pvals;
    std::vector<FeatureEffect> quality_top;
    std::string quality_reason;
    double quality_worst = 0;
    std::uint32_t analyzed = 0;
    for (auto& f : s.feats) {
      FeatureResult r;
      r.name = f.name;
      r.kind = f.kind;
      r.enabled = f.enabled;
      r.sequential_ratio = f.seq_ratio;
      f.seq_ratio = 0;
      double p = NAN;
      if (!f.enabled) {
        results->push_back(std::move(r));
        pvals.push_back(NAN);
        continue;
      }
      ++analyzed;
      std::uint64_t values, nan, inf, finite;
      auto flag = [&](const char* check, double rate, double base, double tol, std::string detail) {
        r.quality_flags.push_back(check);
        FeatureEffect fe{f.name, check, rate, base + tol, NAN, std::move(detail)};
        const double ratio = (rate - base) / std::max(tol, 1e-12);
        if (ratio > quality_worst) {
          quality_worst = ratio;
          quality_reason = check;
        }
        quality_top.push_back(std::move(fe));
      };
      if (f.kind == FeatureKind::numeric) {
        const auto& w = f.ncur;
        values = w.values;
        nan = w.nan;
        inf = w.pos_inf + w.neg_inf;
        finite = w.finite;
        r.ref_mean = f.num.mean;
        r.ref_sd = f.num.sd;
        r.mean = w.mean(f.num.mean);
        r.sd = w.sd();
        r.min = finite ? w.min : NAN;
        r.max = finite ? w.max : NAN;
        const auto sc = compare_numeric(f.num, w, d.p_value_max_n);
        const auto& dm = d.numeric_methods;
        add_score(r.scores, "wasserstein", sc.wasserstein, d, dm, NAN, sc.wasserstein_bound);
        add_score(r.scores, "psi", sc.psi, d, dm);
        add_score(r.scores, "ks", sc.ks, d, dm, sc.ks_p_value, sc.ks_bound);
        add_score(r.scores, "js", sc.js, d, dm);
        add_score(r.scores, "hellinger", sc.hellinger, d, dm);
        p = sc.ks_p_value;
        if (f.has_prev) {
          const auto pv = compare_numeric_windows(f.num, f.nprev, w);
          add_score(r.previous, "wasserstein", pv.wasserstein, d, {});
          add_score(r.previous, "psi", pv.psi, d, {});
          add_score(r.previous, "ks", pv.ks, d, {});
        }
        r.out_of_range_ratio = finite ? static_cast<double>(w.out_of_range()) / static_cast<double>(finite) : 0;
        if (finite > 0) {
          const double base = f.num.has_bins ? 2.0 / (f.ref_finite + 1) : 0;
          if (r.out_of_range_ratio - base >= q.out_of_range_rate &&
              rate_z(r.out_of_range_ratio, static_cast<double>(finite), base, f.ref_finite) >= q.z) {
            flag("out_of_range", r.out_of_range_ratio, base, q.out_of_range_rate,
                 fmt(100 * r.out_of_range_ratio) + "% outside the reference range [" + fmt(f.num.min) + ", " + fmt(f.num.max) + "]");
          }
        }
        if (finite >= q.constant_min_values && w.min == w.max && f.num.sd > 0) {
          flag("constant", 1, 0, 1, "constant at " + fmt(w.min) + " (reference sd " + fmt(f.num.sd) + ")");
        }
      } else {
        const auto& w = f.ccur;
        values = w.values;
        nan = w.nan;
        inf = w.pos_inf + w.neg_inf;
        finite = w.finite;
        r.ref_mean = f.cat.mean;
        r.ref_sd = f.cat.sd;
        if (finite) {
          const double n = static_cast<double>(finite);
          r.mean = f.cat.mean + w.sum / n;
          r.sd = std::sqrt(std::max(0.0, w.sumsq / n - (w.sum / n) * (w.sum / n)));
          r.min = w.min;
          r.max = w.max;
        }
        const auto sc = compare_categorical(f.cat, w, d.p_value_max_n);
        const auto& dm = d.categorical_methods;
        add_score(r.scores, "linf", sc.linf, d, dm);
        add_score(r.scores, "js", sc.js, d, dm);
        add_score(r.scores, "psi", sc.psi, d, dm);
        add_score(r.scores, "chi2", sc.chi2, d, dm, sc.chi2_p_value);
        add_score(r.scores, "cramers_v", sc.cramers_v, d, dm);
        p = sc.chi2_p_value;
        if (f.has_prev) {
          const auto pv = compare_categorical_windows(f.cat, f.cprev, w);
          add_score(r.previous, "linf", pv.linf, d, {});
          add_score(r.previous, "js", pv.js, d, {});
          add_score(r.previous, "psi", pv.psi, d, {});
        }
        r.unseen_ratio = sc.unseen_share;
        if (finite > 0) {
          const double base = f.cat.exhaustive ? 1.0 / (f.ref_finite + 1) : sc.ref_other_share;
          if (sc.unseen_share - base >= q.unseen_rate &&
              rate_z(sc.unseen_share, static_cast<double>(finite), base, f.ref_finite) >= q.z) {
            std::string top_new;
            auto items = w.unseen.items();
            for (std::size_t i = 0; i < items.size() && i < 3; ++i) top_new += (i ? ", " : "") + fmt(items[i].value);
            flag("unseen_category", sc.unseen_share, base, q.unseen_rate,
                 fmt(100 * sc.unseen_share) + "% values outside the reference's categories (e.g. " + top_new + ")");
          }
          if (sc.missing_share >= q.missing_share) {
            flag("missing_category", sc.missing_share, 0, q.missing_share,
                 "categories holding " + fmt(100 * sc.missing_share) + "% of the reference are absent");
          }
        }
      }
      r.values = values;
      if (values > 0) {
        const double nv = static_cast<double>(values);
        r.nan_ratio = static_cast<double>(nan) / nv;
        r.inf_ratio = static_cast<double>(inf) / nv;
        const double ref_nan = f.kind == FeatureKind::numeric ? f.num.nan_rate : f.cat.nan_rate;
        const double ref_inf = f.kind == FeatureKind::numeric ? f.num.inf_rate : f.cat.inf_rate;
        if (r.nan_ratio - ref_nan >= q.nan_rate && rate_z(r.nan_ratio, nv, ref_nan, f.ref_values) >= q.z) {
          flag("nan_rate", r.nan_ratio, ref_nan, q.nan_rate, "NaN " + fmt(100 * ref_nan) + "% -> " + fmt(100 * r.nan_ratio) + "%");
        }
        if (r.inf_ratio - ref_inf >= q.inf_rate && rate_z(r.inf_ratio, nv, ref_inf, f.ref_values) >= q.z) {
          flag("inf_rate", r.inf_ratio, ref_inf, q.inf_rate, "Inf " + fmt(100 * ref_inf) + "% -> " + fmt(100 * r.inf_ratio) + "%");
        }
      }
      for (const auto& ms : r.scores) {
        if (ms.decides && ms.score == ms.score && ms.threshold > 0) {
          const double ratio = ms.score / ms.threshold;
          if (ratio > r.max_ratio) {
            r.max_ratio = ratio;
            r.max_method = ms.method;
          }
        }
      }
      pvals.push_back(p);
      results->push_back(std::move(r));
    }
    // Stream-level decision: effect over threshold, gated by Benjamini-Hochberg where p-values exist.
    const auto reject = benjamini_hochberg(pvals, d.fdr);
    std::vector<FeatureEffect> top;
    std::uint32_t drifted = 0;
    for (std::size_t i = 0; i < results->size(); ++i) {
      auto& r = (*results)[i];
      if (!r.enabled || r.max_ratio < 1) continue;
      if (!std::isnan(pvals[i]) && !reject[i]) continue;
      r.drifted = true;
      ++drifted;
      FeatureEffect fe;
      fe.feature = r.name;
      fe.method = r.max_method;
      for (const auto& ms : r.scores) {
        if (ms.method == r.max_method) {
          fe.score = ms.score;
          fe.threshold = ms.threshold;
        }
      }
      fe.p_value = pvals[i];
      if (r.kind == FeatureKind::numeric) {
        fe.detail = "mean " + fmt(r.ref_mean) + " -> " + fmt(r.mean) + ", sd " + fmt(r.ref_sd) + " -> " + fmt(r.sd);
      } else {
        const auto& f = s.feats[i];
        const auto sc = compare_categorical(f.cat, f.ccur, 0);
        const std::size_t c = sc.largest_change;
        const double refp = f.cat.counts[c] / std::max(1.0, f.cat.n);
        const double curp = f.ccur.finite ? f.ccur.counts[c] / static_cast<double>(f.ccur.finite) : 0;
        const std::string label = c < f.cat.categories.size() ? fmt(f.cat.categories[c]) : std::string("other");
        fe.detail = "share of " + label + ": " + fmt(refp) + " -> " + fmt(curp);
      }
      top.push_back(std::move(fe));
    }
    std::sort(top.begin(), top.end(), [](const FeatureEffect& a, const FeatureEffect& b) {
      return a.score / a.threshold > b.score / b.threshold;
    });
    // Embeddings: mean vector shift and cosine distance.
    s.emb_shift = s.emb_cos = NAN;
    bool emb_moved = false;
    if (s.layout == ProfileLayout::embeddings && s.win_vec_rows > 0 && !s.ref_mean.empty()) {
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
      if (s.emb_shift == s.emb_shift && s.emb_shift >= st.embedding.mean_shift) {
        fe.method = "mean_shift";
        fe.score = s.emb_shift;
        fe.threshold = st.embedding.mean_shift;
        emb_moved = true;
      } else if (cos_valid && s.emb_cos == s.emb_cos && s.emb_cos >= st.embedding.cosine) {
        fe.method = "cosine";
        fe.score = s.emb_cos;
        fe.threshold = st.embedding.cosine;
        emb_moved = true;
      }
      if (emb_moved) {
        fe.detail = "mean shift " + fmt(s.emb_shift) + " of the reference spread, cosine distance " + fmt(s.emb_cos);
        top.insert(top.begin(), fe);
      }
      std::fill(s.win_sum.begin(), s.win_sum.end(), 0.0);
      s.win_vec_rows = 0;
    }
    const double need_share = std::ceil(d.min_drifted_share * analyzed);
    const bool stream_drift = (drifted >= d.min_drifted_features && drifted >= need_share && drifted > 0) || emb_moved;
    const FindingKind dist_kind = s.layout == ProfileLayout::embeddings  ? FindingKind::embedding_drift
                                  : s.layout == ProfileLayout::predictions ? FindingKind::prediction_drift
                                                                           : FindingKind::drift;
    auto& dslot = s.findings[static_cast<std::size_t>(dist_kind)];
    if (stream_drift) {
      if (++dslot.hits >= st.confirm_windows) {
        const double worst = top.empty() ? 1 : top.front().score / top.front().threshold;
        const Severity sev = worst >= 2.5 || drifted * 2 >= std::max<std::uint32_t>(analyzed, 1) ? Severity::critical : Severity::warning;
        std::string summary = std::to_string(drifted) + " of " + std::to_string(analyzed) + " features drifted";
        if (emb_moved) summary = "embedding distribution moved; " + summary;
        for (std::size_t i = 0; i < top.size() && i < 3; ++i) {
          summary += (i ? ", " : ": ") + top[i].feature + " " + top[i].method + " " + fmt(top[i].score) + " (threshold " + fmt(top[i].threshold) + ")";
        }
        const std::string reason = top.empty() ? "drift" : top.front().method;
        const auto hits = dslot.hits;
        raise(s, dist_kind, sev, reason, std::move(summary), top, s.window_rows);
        dslot.hits = hits;
      }
    } else {
      settle(s, dist_kind, st.clear_windows);
    }
    // Data quality.
    if (!quality_top.empty()) {
      std::sort(quality_top.begin(), quality_top.end(), [](const FeatureEffect& a, const FeatureEffect& b) {
        return (a.score - a.threshold) / a.threshold > (b.score - b.threshold) / b.threshold;
      });
      const Severity sev = quality_worst >= 10 ? Severity::critical : Severity::warning;
      std::string summary = std::to_string(quality_top.size()) + " data-quality problem(s): " + quality_top.front().feature + " " + quality_top.front().detail;
      raise(s, FindingKind::data_quality, sev, quality_reason, std::move(summary), std::move(quality_top), s.window_rows);
    } else {
      settle(s, FindingKind::data_quality, st.clear_windows);
    }
    // Schema (dtype/shape mismatches that still let records be analyzed).
    if (s.window_mismatch == 0) settle(s, FindingKind::schema_change, st.clear_windows);
    s.window_mismatch = 0;
    if (s.seq_alarms.empty()) settle(s, FindingKind::sequential_change, st.clear_windows);
    s.seq_alarms.clear();

    // Roll the windows.
    for (auto& f : s.feats) {
      if (f.kind == FeatureKind::numeric) {
        std::swap(f.nprev, f.ncur);
        const double bs = f.nprev.block_sum;
        const auto bn = f.nprev.block_n;
        f.ncur.reset(f.num.lookup.bins());
        f.ncur.block_sum = bs;  // a block may span windows
        f.ncur.block_n = bn;
        f.nprev.block_sum = 0;
        f.nprev.block_n = 0;
      } else {
        std::swap(f.cprev, f.ccur);
        f.ccur.reset(f.cat.categories.size());
      }
      f.has_prev = true;
    }
    s.drift_detected = stream_drift;
    s.drifted = drifted;
    s.results = std::move(results);
    s.last_window_records = s.window_rows;
    s.last_window_end_ns = e.now_ns_;
    s.window_rows = 0;
    s.window_start_ns = e.now_ns_;
    ++s.windows_closed;
    ++e.counters_.windows_closed;
    e.dirty_ = true;
  }

  // ---- schema --------------------------------------------------------------------------------
  // Returns false when the batch cannot be analyzed (feature count differs).
  bool check_schema(Stream& s, const core::DecodedBatch& b) {
    if (b.cols != s.in_cols) {
      s.records_rejected += b.rows;
      e.counters_.records_rejected += b.rows;
      ++s.window_mismatch;
      raise(s, FindingKind::schema_change, Severity::critical, "feature_count",
            "records have " + std::to_string(b.cols) + " values per row, the reference has " + std::to_string(s.in_cols) +
                "; " + std::to_string(s.records_rejected) + " records not analyzed",
            {}, b.rows);
      return false;
    }
    std::string reason, detail;
    if (s.expected_dtype == format::DType::invalid) {
      s.expected_dtype = b.stream->declared_dtype != format::DType::invalid ? b.stream->declared_dtype : b.dtype;
      if (s.ref_source == ReferenceSource::file && !s.ref_dtype.empty() && !same_family(s.ref_dtype, s.expected_dtype)) {
        reason = "dtype";
        detail = "stream dtype " + std::string(format::dtype_name(s.expected_dtype)) + ", reference built from " + s.ref_dtype;
      }
      if (s.ref_source != ReferenceSource::file) s.ref_dtype = std::string(format::dtype_name(s.expected_dtype));
    }
    if (reason.empty() && b.dtype != s.expected_dtype) {
      reason = "dtype";
      detail = "dtype " + std::string(format::dtype_name(b.dtype)) + ", expected " + std::string(format::dtype_name(s.expected_dtype));
    }
    if (s.expected_shape.empty()) {
      s.expected_shape = !b.stream->row_shape.empty() ? b.stream->row_shape
                                                      : std::vector<std::uint32_t>(b.row_shape.begin(), b.row_shape.end());
    }
    if (reason.empty() && !b.row_shape.empty() &&
        !std::equal(b.row_shape.begin(), b.row_shape.end(), s.expected_shape.begin(), s.expected_shape.end())) {
      reason = "shape";
      std::string got, want;
      for (auto d : b.row_shape) got += (got.empty() ? "" : "x") + std::to_string(d);
      for (auto d : s.expected_shape) want += (want.empty() ? "" : "x") + std::to_string(d);
      detail = "row shape " + got + ", expected " + want;
    }
    if (!reason.empty()) {
      ++s.window_mismatch;
      raise(s, FindingKind::schema_change, Severity::warning, reason, detail, {}, b.rows);
    }
    return true;
  }

  // ---- stream lookup ---------------------------------------------------------------------------
  Stream* create(const core::DecodedBatch& b) {
    const auto& info = *b.stream;
    if (e.streams_.size() >= cfg().max_streams) {
      if (std::find(e.cut_names_.begin(), e.cut_names_.end(), info.name) == e.cut_names_.end()) {
        if (e.cut_names_.size() < 4096) e.cut_names_.push_back(info.name);
        ++e.counters_.streams_cut;
      }
      return nullptr;
    }
    auto s = std::make_unique<Stream>();
    s->name = info.name;
    s->component = info.component;
    s->kind = info.kind;
    s->st = cfg().settings_for(info.name);
    if (!s->st.enabled || info.kind == format::StreamKind::raw) s->analyzable = false;
    auto it = e.preloaded_.find(info.name);
    if (it != e.preloaded_.end()) {
      const auto& p = *it->second;
      s->ref_path = s->st.reference.empty() ? std::string("(set by caller)") : s->st.reference;
      init_from_profile(*s, p, ReferenceSource::file);
      if (p.layout == ProfileLayout::features && info.feature_names.size() == p.columns.size()) {
        // Map columns by name when the producer declares the same names in another order.
        std::set<std::string> a(info.feature_names.begin(), info.feature_names.end());
        std::set<std::string> c(p.columns.begin(), p.columns.end());
        if (a == c) {
          for (auto& f : s->feats) {
            const auto pos = std::find(info.feature_names.begin(), info.feature_names.end(), f.name);
            f.column = static_cast<std::uint32_t>(pos - info.feature_names.begin());
          }
        } else {
          raise(*s, FindingKind::schema_change, Severity::warning, "feature_names",
                "the stream's feature names differ from the reference's; compared by position", {}, 0);
          s->window_mismatch = 1;
        }
      }
    }
    e.by_name_[s->name] = e.streams_.size();
    e.streams_.push_back(std::move(s));
    return e.streams_.back().get();
  }
};

// ---------------------------------------------------------------------------------------------

DetectorEngine::DetectorEngine(EngineConfig config) : config_(std::move(config)) {
  for (const auto& [name, st] : config_.streams) {
    if (st.reference.empty()) continue;
    try {
      preloaded_[name] = std::make_shared<const ReferenceProfile>(load_profile(st.reference));
    } catch (const ProfileError& ex) {
      throw ProfileError("detectors.streams." + name + ".reference: " + ex.what());
    }
  }
  published_ = std::make_shared<const DetectorSnapshot>();
}

DetectorEngine::~DetectorEngine() = default;

void DetectorEngine::set_reference(const std::string& stream, std::shared_ptr<const ReferenceProfile> profile,
                                   std::string path) {
  preloaded_[stream] = std::move(profile);
  for (auto& [name, st] : config_.streams) {
    if (name == stream) st.reference = path;
  }
  if (!path.empty() && config_.settings_for(stream).reference.empty()) {
    auto st = config_.defaults;
    st.reference = path;
    config_.streams.emplace_back(stream, st);
  }
}

DetectorEngine::Stream* DetectorEngine::stream_for(const core::DecodedBatch& b) {
  if (b.stream == last_info_ && last_index_ < streams_.size() && streams_[last_index_]->name == b.stream->name) {
    return streams_[last_index_].get();
  }
  auto it = by_name_.find(b.stream->name);
  if (it == by_name_.end()) {
    EngineAccess a{*this};
    Stream* s = a.create(b);
    if (!s) return nullptr;
    it = by_name_.find(b.stream->name);
  }
  last_info_ = b.stream;
  last_index_ = it->second;
  return streams_[it->second].get();
}

void DetectorEngine::on_batch(const core::DecodedBatch& b) {
  if (!config_.enabled || !b.stream) return;
  if (b.values.size() < b.rows * b.cols) return;  // the reader guarantees this; stay safe anyway
  Stream* s = stream_for(b);
  if (!s) {
    counters_.records_cut += b.rows;
    return;
  }
  EngineAccess a{*this};
  const std::uint64_t arrival = ticked_ ? now_ns_ : (b.timestamp_ns ? b.timestamp_ns : core::unix_now_ns());
  if (!ticked_) now_ns_ = std::max(now_ns_, arrival);
  if (s->batches > 0 && arrival >= s->last_arrival) {
    const double gap = static_cast<double>(arrival - s->last_arrival);
    s->usual_gap = std::max(gap, s->usual_gap * std::exp(-gap / kGapMemoryNs));
  }
  s->last_arrival = arrival;
  ++s->batches;
  s->records_total += b.rows;
  s->period_rows += b.rows;
  if (s->period_start == 0) s->period_start = arrival;
  if (s->findings[static_cast<std::size_t>(FindingKind::staleness)].open) a.settle(*s, FindingKind::staleness, 1);
  if (s->in_cols == 0 && s->ref_source == ReferenceSource::pending) {
    if (b.cols == 0) return;
    a.init_pinning(*s, b);
  }
  if (a.check_schema(*s, b)) a.add_rows(*s, b);
  if (dirty_) publish(now_ns_, false);  // rate-limited by snapshot_interval
}

void DetectorEngine::on_tick(std::uint64_t now) {
  hand_over(false);
  ticked_ = true;
  now_ns_ = std::max(now_ns_, now);
  EngineAccess a{*this};
  for (auto& sp : streams_) {
    Stream& s = *sp;
    const auto& st = s.st;
    if (s.ready && st.window_time.count() > 0 && now_ns_ - s.window_start_ns >= static_cast<std::uint64_t>(st.window_time.count()) &&
        s.window_rows + s.staged >= st.min_window_records) {
      a.flush_staging(s);
      if (s.window_rows > 0) a.close_window(s);
    }
    if (st.staleness.enabled && s.batches >= st.staleness.min_batches) {
      const double silent = static_cast<double>(now_ns_ - std::min(now_ns_, s.last_arrival));
      const double limit = std::max(static_cast<double>(st.staleness.min_silence.count()), st.staleness.factor * s.usual_gap);
      if (silent > limit) {
        a.raise(s, FindingKind::staleness, Severity::warning, "silent",
                "no records for " + fmt(silent / 1e9) + " s (usual interval up to " + fmt(s.usual_gap / 1e9) + " s)", {}, 0);
      }
    }
    if (st.throughput.enabled && s.period_start > 0 && now_ns_ > s.period_start &&
        now_ns_ - s.period_start >= static_cast<std::uint64_t>(st.throughput.period.count())) {
      const double secs = static_cast<double>(now_ns_ - s.period_start) / 1e9;
      const double rate = static_cast<double>(s.period_rows) / secs;
      bool flagged = false;
      if (s.periods >= st.throughput.warmup_periods && s.baseline > 0) {
        const double expected = s.baseline * secs;
        if (rate < s.baseline / st.throughput.factor && expected >= st.throughput.min_expected) {
          a.raise(s, FindingKind::throughput, Severity::warning, "drop",
                  "rate " + fmt(rate) + "/s, usual " + fmt(s.baseline) + "/s", {}, s.period_rows);
          flagged = true;
        } else if (rate > s.baseline * st.throughput.factor && static_cast<double>(s.period_rows) >= st.throughput.min_expected) {
          a.raise(s, FindingKind::throughput, Severity::warning, "spike",
                  "rate " + fmt(rate) + "/s, usual " + fmt(s.baseline) + "/s", {}, s.period_rows);
          flagged = true;
        }
      }
      if (!flagged) a.settle(s, FindingKind::throughput, 1);
      s.baseline = s.periods == 0 ? rate : s.baseline + st.throughput.alpha * (rate - s.baseline);
      ++s.periods;
      s.period_rows = 0;
      s.period_start = now_ns_;
    }
  }
  publish(now_ns_, false);
}

void DetectorEngine::flush(std::uint64_t now) {
  now_ns_ = std::max(now_ns_, now);
  EngineAccess a{*this};
  for (auto& sp : streams_) {
    a.flush_staging(*sp);
    if (sp->ready && sp->window_rows > 0) a.close_window(*sp);
  }
  publish(now_ns_, true);
}

void DetectorEngine::publish(std::uint64_t now, bool force) {
  if (!force) {
    if (!dirty_ && sequence_ > 0 && now - last_publish_ns_ < 1000000000ULL) return;
    if (sequence_ > 0 && now - last_publish_ns_ < static_cast<std::uint64_t>(config_.snapshot_interval.count())) return;
  }
  auto snap = std::make_shared<DetectorSnapshot>();
  snap->generated_unix_ns = now;
  snap->sequence = ++sequence_;
  snap->counters = counters_;
  for (const auto& sp : streams_) {
    const Stream& s = *sp;
    auto ss = std::make_shared<DetectorStreamSnapshot>();
    ss->name = s.name;
    ss->component = s.component;
    ss->kind = std::string(format::stream_kind_name(s.kind));
    ss->layout = layout_name(s.layout);
    ss->reference = s.ref_source;
    ss->reference_path = s.ref_path;
    ss->reference_error = s.ref_error;
    ss->reference_rows = s.ref_rows;
    ss->pin_progress = s.pinned;
    ss->pin_target = s.pin_target;
    ss->records_total = s.records_total;
    ss->records_rejected = s.records_rejected;
    ss->windows_closed = s.windows_closed;
    ss->last_window_records = s.last_window_records;
    ss->last_window_end_unix_ns = s.last_window_end_ns;
    ss->drift_detected = s.drift_detected;
    ss->drifted_features = s.drifted;
    std::uint32_t analyzed = 0;
    for (const auto& f : s.feats) analyzed += f.enabled;
    ss->features_analyzed = analyzed;
    ss->features_cut = s.features_cut;
    ss->embedding_mean_shift = s.emb_shift;
    ss->embedding_mean_cosine = s.emb_cos;
    ss->memory_bytes = s.memory_bytes();
    ss->features = s.results;
    snap->streams.push_back(std::move(ss));
    for (const auto& slot : s.findings) {
      if (slot.open) snap->open_findings.push_back(slot.f);
    }
  }
  std::sort(snap->open_findings.begin(), snap->open_findings.end(), [](const Finding& a, const Finding& b) { return a.id < b.id; });
  snap->closed_findings.assign(closed_.rbegin(), closed_.rend());
  pending_ = std::move(snap);
  hand_over(force);
  last_publish_ns_ = now;
  dirty_ = false;
}

void DetectorEngine::hand_over(bool wait) {
  if (!pending_) return;
  std::unique_lock<std::mutex> lock(publish_mu_, std::defer_lock);
  if (wait) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return;  // a reader is copying the pointer: hand over on the next tick
  }
  published_.swap(pending_);
  lock.unlock();
  pending_.reset();  // the previous snapshot is freed outside the lock
}

std::uint64_t DetectorEngine::memory_bytes() const noexcept {
  std::uint64_t b = 0;
  for (const auto& s : streams_) b += s->memory_bytes();
  return b;
}

}  // namespace mltap::detectors
