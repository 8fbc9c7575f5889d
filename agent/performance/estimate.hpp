// Label-free performance estimates of a binary predictions stream (CBPE, docs/performance.md
// "Estimates"). The reference: the stream's first `reference_pairs` joined pairs, kept in the
// state directory once complete; its calibration map (calibration.hpp) turns each later
// prediction's score into P(label = 1), and each prediction adds, on arrival and in O(1), its
// expected share of the confusion matrix to its window:
//   predicted positive (score >= threshold): E[TP] += p, E[FP] += 1 - p;
//   predicted negative:                      E[FN] += p, E[TN] += 1 - p;
// with the variances p (1 - p) of those Bernoulli labels for the sampling-error band. The sums
// live in a file of the state directory mapped MAP_SHARED (as the pending table's window
// counters do), so they survive kill -9 with the windows' other data.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "agent/performance/calibration.hpp"
#include "agent/performance/config.hpp"
#include "core/performance_state.hpp"

namespace mltap::performance {

// Equal-width score bins on [0, 1] for the support check and the reference's share of the band.
inline constexpr std::uint32_t kEstimateBins = 10;

// One window's sums (144 bytes, in the mapped file).
struct EstimateSums {
  std::int64_t start_ns;     // INT64_MIN: unused
  std::uint64_t n;           // predictions scored
  std::uint64_t n_pos;       // of which predicted positive
  std::uint64_t unsupported; // scores where the reference has too few pairs
  double tp;                 // sum of p over predicted positives (E[TP])
  double fn;                 // sum of p over predicted negatives (E[FN])
  double var_pos;            // sum of p (1 - p) over predicted positives
  double var_neg;            // sum of p (1 - p) over predicted negatives
  std::uint32_t pos_bin[kEstimateBins];  // predicted positives per score bin
  std::uint32_t neg_bin[kEstimateBins];  // predicted negatives per score bin
};
static_assert(sizeof(EstimateSums) == 144);

// The metrics and their bands from a window's sums (pure). `bin_var`: the variance of the
// reference's calibrated mean in each score bin (kEstimateBins values; empty: sampling error only).
core::PerformanceEstimate estimate_from_sums(const EstimateSums& s, std::span<const double> bin_var = {});

class Estimator {
 public:
  // `dir` empty: in memory only. `stem`: the stream's file stem (StreamJoin::file_stem).
  Estimator(const std::string& dir, const std::string& stem, const std::string& stream,
            std::int64_t window_ns, const PerformanceConfig& config);
  ~Estimator();
  Estimator(const Estimator&) = delete;
  Estimator& operator=(const Estimator&) = delete;

  bool fitted() const noexcept { return fitted_; }
  // A prediction of the window starting at `window_start` (O(1); nothing before the fit).
  void on_prediction(std::int64_t window_start, double score) noexcept;
  // A joined pair: collected into the reference until it is complete, then fitted (stamped
  // `now_ns`: the caller passes the label time of the completing pair) and stored.
  void on_joined(double score, double label, std::int64_t now_ns);
  core::EstimateReference reference_state() const;
  // The estimate of the window starting at `window_start`, or why it is withheld.
  core::PerformanceEstimate window_estimate(std::int64_t window_start) const;
  // The calibrated probability of a score (tests).
  double calibrated(double score) const noexcept { return calibration_.apply(score); }

 private:
  void fit(std::int64_t now_ns);
  bool load_reference();
  void store_reference() const;
  void open_sums();
  bool supported(double score) const noexcept;
  EstimateSums* slot(std::int64_t window_start) noexcept;

  std::string dir_, doc_name_, sums_path_, stream_;
  std::int64_t window_ns_;
  std::uint64_t target_;
  double threshold_;
  std::uint32_t bins_, min_bin_pairs_;
  double max_unsupported_;
  std::vector<JoinedPair> pairs_;
  bool fitted_ = false;
  std::int64_t fitted_ns_ = 0;
  std::uint64_t fingerprint_ = 0;
  CalibrationChoice calibration_;
  std::vector<std::uint64_t> bin_counts_;  // reference pairs per score bin (kEstimateBins)
  std::vector<double> bin_var_;            // variance of the calibrated mean per score bin
  struct Header;
  Header* header_ = nullptr;
  EstimateSums* sums_ = nullptr;
  void* base_ = nullptr;
  std::size_t bytes_ = 0;
  bool mapped_file_ = false;
};

}  // namespace mltap::performance
