// Performance findings (docs/performance.md, "Findings"): a finding of kind `performance` when a
// window's metric (accuracy), overall or in a slice, is below its baseline by more than the
// tolerance with confidence: its one-sided upper bound (Wilson) is below baseline - tolerance,
// given at least min_labels labelled pairs. Each finding carries the abnormality level of the
// hierarchy (one feature drifted; the input distribution moved; only P(Y|X) changed: concept
// shift), from the input streams' drift state (core::InputDriftSource), and names the slices.
//
// The decision takes a metric value with its bound and basis, so that a label-free estimate
// (basis "estimated", with its own bound) can feed it as realized values do.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/performance/config.hpp"
#include "core/finding.hpp"
#include "core/input_drift.hpp"
#include "core/performance_state.hpp"

namespace mltap::performance {

enum class Basis { realized, estimated };
constexpr std::string_view basis_name(Basis b) noexcept {
  return b == Basis::realized ? "realized" : "estimated";
}

// A higher-is-better metric of one scope (the stream, or a slice) in one window.
struct MetricEvidence {
  std::string scope;    // "all" or "slice:<value>"
  std::string metric;   // "accuracy"
  double value = 0;
  double upper = 0;     // one-sided upper confidence bound of the true value
  std::uint64_t n = 0;  // labelled pairs (realized) or predictions (estimated)
  Basis basis = Basis::realized;
};

// The one-sided standard normal quantile z with P(Z <= z) = p (0 < p < 1).
double normal_quantile(double p) noexcept;
// Wilson score upper bound of a proportion `p_hat` of `n` at one-sided quantile z.
double wilson_upper(double p_hat, std::uint64_t n, double z) noexcept;
// A drop: the metric is, with confidence, below baseline - tolerance.
bool is_drop(const MetricEvidence& e, double baseline, double tolerance) noexcept;

enum class AbnormalityLevel { unknown, feature, inputs, concept_shift };
// The finding's `reason`.
constexpr std::string_view abnormality_name(AbnormalityLevel l) noexcept {
  switch (l) {
    case AbnormalityLevel::feature: return "one_feature_drifted";
    case AbnormalityLevel::inputs: return "input_distribution_shift";
    case AbnormalityLevel::concept_shift: return "concept_shift";
    case AbnormalityLevel::unknown: return "inputs_unknown";
  }
  return "inputs_unknown";
}
// The hierarchy: a multivariate shift or >= many_features drifted features (over all inputs):
// inputs; exactly one drifted feature (fewer than many_features): feature; inputs analyzed and
// none drifted: concept; nothing analyzed: unknown. `detail` gets a sentence saying which.
AbnormalityLevel classify_inputs(const std::vector<core::InputDrift>& inputs, std::uint32_t many_features,
                                 std::string* detail);

// Keeps the open performance finding of each stream (at most one: kind performance) and the
// recently closed ones. Ids come from `first_id` up (distinct from the detectors' ids).
class PerformanceFindings {
 public:
  static constexpr std::uint64_t kFirstId = 1ULL << 48;
  explicit PerformanceFindings(FindingsConfig config) : config_(std::move(config)) {}

  // Judges the stream's latest window with enough labels against its baseline (per-stream floor,
  // global floor, or the pooled metric of its first reference_windows windows with enough labels,
  // pinned once seen). `component`: of the predictions stream, for the finding.
  void evaluate(const core::PerformanceStreamState& state, const std::string& component,
                const StreamSettings* settings, const std::vector<core::InputDrift>& inputs,
                std::uint64_t now_unix_ns);
  // The decision for a set of evidence of one stream (realized or estimated), with baselines by
  // scope; opens, updates, supersedes or closes the stream's finding.
  void decide(const std::string& stream, const std::string& component,
              const std::vector<MetricEvidence>& evidence,
              const std::map<std::string, double>& baselines, std::int64_t window_start_ns,
              const std::vector<core::InputDrift>& inputs, std::uint64_t now_unix_ns);
  const std::vector<core::Finding>& open() const noexcept { return open_; }
  const std::vector<core::Finding>& closed() const noexcept { return closed_; }
  // The pinned baseline of a scope ("all", "slice:<v>"), if any.
  std::optional<double> baseline(const std::string& stream, const std::string& scope) const;

  // Keeps the open findings (ids, onsets), the pinned baselines and the next id in the state
  // document `performance-findings` of `dir` (core::StateStore: atomic, durable), so that a
  // restart or kill -9 finds them open under the same ids rather than re-notifying; loads what a
  // previous run kept now. An unusable document is moved aside and logged (start afresh).
  void attach_state(std::string dir);
  // Writes the document when something other than the update times changed since the last write
  // (call after evaluating the streams). A failed write is logged and retried next time.
  void save_if_changed();

 private:
  struct Reference {
    std::map<std::string, double> baseline;  // by scope, once pinned
    bool pinned = false;
    std::int64_t end_ns = 0;  // start of the last reference window
  };
  void close(std::vector<core::Finding>::iterator it, std::uint64_t now);
  FindingsConfig config_;
  std::map<std::string, Reference> refs_;
  std::vector<core::Finding> open_;
  std::vector<core::Finding> closed_;
  std::uint64_t next_id_ = kFirstId;
  std::string state_dir_;   // empty: not kept
  std::string saved_;       // the document last written (update times left out)
};

}  // namespace mltap::performance
