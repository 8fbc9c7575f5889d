// `mltap review`: for the predictions of a stream that were wrong (their retained label says so,
// or a user flagged them), which upstream streams and features had abnormal values for those
// trace ids, compared with the correctly predicted ids (docs/lineage.md). mltrace's workflow over
// the retained samples, in bounded memory: at most `max_ids` ids per group, chosen by a hash of
// the id (the same ids for the same data), so memory is O(max_ids x features).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/retention/store.hpp"

namespace mltap::retention {

struct ReviewRequest {
  std::string stream;                      // the predictions stream
  std::string labels_stream;               // empty: the one the stream declared
  format::Task task = format::Task::none;  // none: the stream's declared task
  double threshold = 0.5;                  // binary: score >= threshold predicts positive
  std::uint64_t since_unix_ns = 0;         // predictions' timestamps in [since, until)
  std::uint64_t until_unix_ns = ~0ull;
  std::size_t max_ids = 10'000;  // per group (wrong, correct)
  // The predictions' slice column (performance.streams.<name>.slice.column): not a score, left
  // out before the row is scored, as the performance component does. Empty: none.
  std::string slice_column;
};

// A feature's reference: what "abnormal" is measured against (|value - mean| / sd).
struct FeatureReference {
  double mean = 0;
  double sd = 1;
  std::string source;  // "detectors (pinned)", "detectors (file)", "retained rows"
};
// The detectors' reference of (stream, feature name, column), if they have one; the layering-
// correct way in: mltapd wires it from the published core::DetectorSnapshot.
using ReferenceLookup = std::function<std::optional<FeatureReference>(
    const std::string& stream, const std::string& feature, std::size_t column)>;

struct FeatureRank {
  std::string feature;
  std::size_t column = 0;
  std::uint64_t n_wrong = 0, n_correct = 0;  // ids of each group with a value here
  double wrong_mean_abs_z = NAN, correct_mean_abs_z = NAN;
  // P(|z| of a wrong id > |z| of a correct id), ties count half (Mann-Whitney); NaN with an
  // empty group. What features are ranked by: 0.5 = as abnormal for wrong ids as for correct ones.
  double auc = NAN;
  FeatureReference reference;
  std::string why;
};

struct StreamRank {
  std::string stream;
  std::string component;
  double score = NAN;                                // its best feature's AUC
  std::uint64_t wrong_found = 0, correct_found = 0;  // ids of each group retained in this stream
  std::vector<FeatureRank> features;                 // most abnormal first
  std::string why;
};

struct ReviewResult {
  std::string error;  // non-empty: nothing reviewed (unknown stream...)
  std::string labels_stream;
  format::Task task = format::Task::none;
  std::uint64_t predictions = 0;  // retained predictions with a trace id in the interval
  std::uint64_t labelled = 0;     // of them, with a retained label
  std::uint64_t wrong = 0;        // labelled and wrong, or flagged
  std::uint64_t flagged = 0;      // of the wrong ones, flagged by a user
  std::uint64_t correct = 0;
  std::uint64_t wrong_used = 0, correct_used = 0;  // after the max_ids bound
  std::vector<StreamRank> streams;                 // most abnormal first
};

ReviewResult review(const RetentionStore::View& view, const ReviewRequest& request,
                    const ReferenceLookup& reference);

// Mann-Whitney AUC of `a` over `b` (ties half); NaN when either is empty. Sorts its arguments.
double mann_whitney_auc(std::vector<double>& a, std::vector<double>& b);

}  // namespace mltap::retention
