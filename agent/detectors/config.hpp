// The `detectors:` configuration section. Top-level keys set the defaults of every stream;
// `detectors.streams.<name>` overrides any of them for one stream. Unknown keys are errors.
// docs/detectors.md lists every key with its default and why.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/config_reader.hpp"

namespace mltap::detectors {

using namespace std::chrono_literals;

struct DriftSettings {
  std::vector<std::string> numeric_methods{"wasserstein", "psi"};  // decide numeric drift
  std::vector<std::string> categorical_methods{"linf", "js"};      // decide categorical drift
  double psi = 0.2;
  double wasserstein = 0.1;  // W1 / reference standard deviation
  double ks = 0.1;
  double js = 0.1;           // Jensen-Shannon distance, base 2
  double hellinger = 0.1;
  double linf = 0.05;        // largest change of one category's share
  double fdr = 0.01;         // Benjamini-Hochberg level over the window's p-values
  double p_value_max_n = 100000;  // p-values only when n_eff is at most this
  std::uint32_t min_drifted_features = 1;
  double min_drifted_share = 0;   // and at least this share of the analyzed features
  // Fine bins of pinned references (KS, W1); 64 keeps a 32-feature stream within 100 KiB of
  // state (docs/detectors.md, "Per-stream state"). File references keep their own bins.
  std::uint32_t bins = 64;
  std::uint32_t coarse_bins = 16; // PSI / JS / Hellinger bins (+2 overflow bins)
  // Noise floor (docs/detectors.md): a method decides only above max(threshold, mean + noise_z sd
  // of its score under no change), and only while that floor is at most max_floor_ratio x its
  // threshold (otherwise the reference is too small for it).
  double noise_z = 5;
  double max_floor_ratio = 5;
  std::uint32_t noise_replicates = 64;  // bootstrap replicates when the engine estimates the noise
  // Fast looks (docs/detectors.md, "Fast looks"): every look_records records, trailing segments
  // of 1x..128x look_records records are tested between window closes, with at most one false
  // alarm per sequential.arl_records records; 0 = off (windows decide only when they close).
  std::uint64_t look_records = 16;
  double threshold(std::string_view method) const noexcept;

  bool operator==(const DriftSettings&) const = default;  // reload: what changed
};

struct QualitySettings {
  double nan_rate = 0.005;          // excess over the reference's rate
  double inf_rate = 0.005;
  double out_of_range_rate = 0.01;  // share outside [reference min, max]
  double unseen_rate = 0.01;        // categorical: values not among the reference's categories
  double missing_share = 0.01;      // categorical: reference share of categories that vanished
  double z = 5;                     // and the excess must be this many standard errors
  std::uint64_t constant_min_values = 100;

  bool operator==(const QualitySettings&) const = default;  // reload: what changed
};

enum class SequentialMethod { cusum, page_hinkley, both };

struct SequentialSettings {
  bool enabled = true;
  SequentialMethod method = SequentialMethod::both;
  // CUSUM: one two-sided chart per feature and target shift, on every record (standardized by
  // the reference, clipped at +-clip sd); each chart is the optimal (likelihood-ratio) CUSUM for
  // its shift, and together they stay near the optimum for shifts in between.
  std::vector<double> shifts{0.25, 0.5, 1.0};  // target mean shifts, in reference sd
  double clip = 4;                    // standardized values are clipped at +-clip (outliers)
  std::uint64_t block_records = 512;  // Page-Hinkley steps on means of this many records
  double arl_records = 1e9;           // records between false alarms, per stream
  double k = 0.5;                     // Page-Hinkley's drift allowance, in standard errors of a block mean
  double reference_sigmas = 3;        // widen k by this many standard errors of the reference mean

  bool operator==(const SequentialSettings&) const = default;  // reload: what changed
};

struct StalenessSettings {
  bool enabled = true;
  double factor = 5;                     // silent for factor x the usual interval
  std::chrono::nanoseconds min_silence = 30s;
  std::uint32_t min_batches = 10;        // learn the interval first

  bool operator==(const StalenessSettings&) const = default;  // reload: what changed
};

struct ThroughputSettings {
  bool enabled = true;
  std::chrono::nanoseconds period = 60s;
  double factor = 4;              // rate below baseline/factor or above baseline*factor
  std::uint32_t warmup_periods = 5;
  double min_expected = 20;       // records a period must be expected to hold to judge a drop
  double alpha = 0.1;             // EWMA weight of the newest period in the baseline

  bool operator==(const ThroughputSettings&) const = default;  // reload: what changed
};

struct EmbeddingSettings {
  std::uint32_t min_width = 256;  // wider rows are analyzed as embeddings
  std::uint32_t projections = 16;
  std::uint64_t seed = 0x6d6c746170ULL;
  std::uint32_t mean_dims = 4096;  // dims kept for the mean vector
  double mean_shift = 0.1;   // |mean_w - mean_ref| / sqrt(trace of reference covariance)
  double cosine = 0.05;      // cosine distance of mean vectors (when the reference mean is clear)

  bool operator==(const EmbeddingSettings&) const = default;  // reload: what changed
};

struct StreamSettings {
  bool enabled = true;
  std::string reference;  // profile file; empty = pin the first records
  std::uint64_t pin_records = 20000;
  std::uint64_t window_records = 5000;
  std::chrono::nanoseconds window_time = 60s;  // 0 = by records only
  std::uint64_t min_window_records = 1000;     // a time window closes only with this many
  std::uint32_t confirm_windows = 1;  // drifted windows in a row before a finding opens
  std::uint32_t clear_windows = 2;    // clean windows in a row before it closes
  std::vector<std::string> categorical;  // force kinds when pinning
  std::vector<std::string> numeric;
  double class_threshold = 0.5;       // predictions with one column
  std::uint32_t fleet_bins = 10;      // fleet bins per feature (file references only); 0 = off
  DriftSettings drift;
  QualitySettings quality;
  SequentialSettings sequential;
  StalenessSettings staleness;
  ThroughputSettings throughput;
  EmbeddingSettings embedding;

  bool operator==(const StreamSettings&) const = default;  // reload: what changed
};

struct EngineConfig {
  bool enabled = true;
  std::uint32_t max_streams = 256;
  std::uint32_t max_features_per_stream = 2048;
  std::chrono::nanoseconds snapshot_interval = 250ms;
  std::uint32_t closed_findings_kept = 256;
  std::uint32_t top_features = 5;
  StreamSettings defaults;
  std::vector<std::pair<std::string, StreamSettings>> streams;  // per-stream overrides

  const StreamSettings& settings_for(std::string_view stream) const noexcept;

  bool operator==(const EngineConfig&) const = default;  // reload: what changed
};

// Parses the `detectors:` section (a null section gives the defaults). Throws core::ConfigError.
EngineConfig parse_engine_config(core::ConfigSection& section);
// The defaults as YAML, with comments (also in docs/detectors.md).
std::string default_config_yaml();

}  // namespace mltap::detectors
