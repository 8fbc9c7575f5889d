#include "agent/retention/review.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <queue>

namespace mltap::retention {
namespace {

// The `cap` ids with the smallest hash: a uniform sample that does not depend on arrival order.
class IdSample {
 public:
  explicit IdSample(std::size_t cap) : cap_(cap) {}
  void add(std::uint64_t id) {
    ++seen_;
    const std::uint64_t h = format::trace_id_hash(id ^ 0x5EEDF00DULL);
    if (heap_.size() < cap_) {
      heap_.emplace(h, id);
    } else if (cap_ > 0 && h < heap_.top().first) {
      heap_.pop();
      heap_.emplace(h, id);
    }
  }
  std::uint64_t seen() const noexcept { return seen_; }
  std::vector<std::uint64_t> ids() const {
    auto copy = heap_;
    std::vector<std::uint64_t> out;
    while (!copy.empty()) {
      out.push_back(copy.top().second);
      copy.pop();
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::size_t cap_;
  std::uint64_t seen_ = 0;
  std::priority_queue<std::pair<std::uint64_t, std::uint64_t>> heap_;
};

// Whether a prediction row is right about its label; nullopt when the task cannot tell.
std::optional<bool> is_correct(format::Task task, double threshold, std::span<const double> p,
                               std::span<const double> label) {
  if (p.empty() || label.empty() || !std::isfinite(label[0])) return std::nullopt;
  switch (task) {
    case format::Task::binary: {
      if (p.size() > 2) return std::nullopt;
      const double score = p.size() == 2 ? p[1] : p[0];
      if (!std::isfinite(score)) return std::nullopt;
      return (score >= threshold) == (label[0] != 0.0);
    }
    case format::Task::multiclass: {
      double cls = p[0];
      if (p.size() > 1) cls = static_cast<double>(std::max_element(p.begin(), p.end()) - p.begin());
      if (!std::isfinite(cls)) return std::nullopt;
      return std::llround(cls) == std::llround(label[0]);
    }
    default: return std::nullopt;  // regression: only flags say "wrong"
  }
}

// |z| of a value; NaN and Inf are as abnormal as it gets.
double abs_z(double v, const FeatureReference& ref) {
  if (!std::isfinite(v)) return INFINITY;
  return std::fabs(v - ref.mean) / ref.sd;
}

double mean_of(const std::vector<double>& v) {
  if (v.empty()) return NAN;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

// Mean and standard deviation of each column over the stream's retained rows (Welford): the
// reference of features the detectors have none for.
std::vector<FeatureReference> retained_reference(const RetentionStore::View& view,
                                                 const std::string& stream, std::size_t cols) {
  std::vector<double> mean(cols, 0.0), m2(cols, 0.0);
  std::vector<std::uint64_t> n(cols, 0);
  view.for_each(stream, 0, ~0ull, [&](const RetainedRow& r) {
    for (std::size_t j = 0; j < std::min(cols, r.values.size()); ++j) {
      const double x = r.values[j];
      if (!std::isfinite(x)) continue;
      ++n[j];
      const double d = x - mean[j];
      mean[j] += d / static_cast<double>(n[j]);
      m2[j] += d * (x - mean[j]);
    }
  });
  std::vector<FeatureReference> out(cols);
  for (std::size_t j = 0; j < cols; ++j) {
    const double sd = n[j] > 1 ? std::sqrt(m2[j] / static_cast<double>(n[j] - 1)) : 0.0;
    out[j] = FeatureReference{mean[j], sd > 0 ? sd : 1.0, "retained rows"};
  }
  return out;
}

bool ranks_before(const FeatureRank& a, const FeatureRank& b) {
  const double aa = std::isnan(a.auc) ? -1 : a.auc, ba = std::isnan(b.auc) ? -1 : b.auc;
  if (aa != ba) return aa > ba;
  auto excess = [](const FeatureRank& f) {
    const double w = std::isnan(f.wrong_mean_abs_z) ? 0 : f.wrong_mean_abs_z;
    const double c = std::isnan(f.correct_mean_abs_z) ? 0 : f.correct_mean_abs_z;
    return w - c;
  };
  if (excess(a) != excess(b)) return excess(a) > excess(b);
  return a.column < b.column;
}

std::string why_of(const std::string& stream, const FeatureRank& f) {
  std::string s = "'" + f.feature + "' of '" + stream + "': mean |z| " +
                  fmt("%.3g", f.wrong_mean_abs_z) + " on " + std::to_string(f.n_wrong) +
                  " wrong predictions vs " + fmt("%.3g", f.correct_mean_abs_z) + " on " +
                  std::to_string(f.n_correct) + " correct ones";
  if (!std::isnan(f.auc)) {
    s += "; more abnormal for a wrong id than for a correct one in " + fmt("%.1f", 100 * f.auc) +
         "% of pairs (AUC " + fmt("%.3f", f.auc) + ")";
  }
  s += "; reference: " + f.reference.source;
  if (f.n_wrong < 5) s += "; few wrong ids: weak evidence";
  return s;
}

}  // namespace

double mann_whitney_auc(std::vector<double>& a, std::vector<double>& b) {
  if (a.empty() || b.empty()) return NAN;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  // For each a: count of b below it plus half of the b equal to it (two pointers).
  double wins = 0;
  std::size_t lo = 0, hi = 0;
  for (const double x : a) {
    while (lo < b.size() && b[lo] < x) ++lo;
    if (hi < lo) hi = lo;
    while (hi < b.size() && b[hi] <= x) ++hi;
    wins += static_cast<double>(lo) + 0.5 * static_cast<double>(hi - lo);
  }
  return wins / (static_cast<double>(a.size()) * static_cast<double>(b.size()));
}

ReviewResult review(const RetentionStore::View& view, const ReviewRequest& req,
                    const ReferenceLookup& reference) {
  ReviewResult out;
  const StreamMeta* pred = view.meta(req.stream);
  if (!pred) {
    out.error = "no retained records of stream '" + req.stream + "'";
    return out;
  }
  out.labels_stream = req.labels_stream.empty() ? pred->labels_stream : req.labels_stream;
  out.task = req.task == format::Task::none ? pred->task : req.task;

  // The slice column's index among the predictions' columns, if it has one.
  std::optional<std::size_t> slice_col;
  if (!req.slice_column.empty()) {
    const auto& names = pred->feature_names;
    if (const auto it = std::find(names.begin(), names.end(), req.slice_column); it != names.end())
      slice_col = static_cast<std::size_t>(it - names.begin());
  }
  std::vector<double> scored;

  // 1. Wrong and correct ids: the retained predictions joined to the retained labels.
  IdSample wrong(req.max_ids), correct(req.max_ids);
  view.for_each(req.stream, req.since_unix_ns, req.until_unix_ns, [&](const RetainedRow& r) {
    if (!r.has_trace_id) return;
    // One prediction per id: the first retained row (a record read again after a kill -9 of
    // mltapd, before its read position was checkpointed, is retained twice).
    if (const auto first = view.find(req.stream, r.trace_id);
        !first || first->timestamp_ns != r.timestamp_ns || first->values.data() != r.values.data())
      return;
    ++out.predictions;
    std::optional<bool> ok;
    if (!out.labels_stream.empty()) {
      if (const auto label = view.find(out.labels_stream, r.trace_id)) {
        ++out.labelled;
        std::span<const double> p = r.values;
        if (slice_col && *slice_col < p.size()) {
          scored.assign(p.begin(), p.end());
          scored.erase(scored.begin() + static_cast<std::ptrdiff_t>(*slice_col));
          p = scored;
        }
        ok = is_correct(out.task, req.threshold, p, label->values);
      }
    }
    if (view.flagged(req.stream, r.trace_id)) {
      ++out.flagged;
      ok = false;
    }
    if (!ok) return;
    (*ok ? correct : wrong).add(r.trace_id);
  });
  out.wrong = wrong.seen();
  out.correct = correct.seen();
  const auto wrong_ids = wrong.ids(), correct_ids = correct.ids();
  out.wrong_used = wrong_ids.size();
  out.correct_used = correct_ids.size();
  if (wrong_ids.empty()) return out;

  // 2. Every other stream holding those ids: how abnormal each feature was for each group.
  for (const StreamMeta* up : view.streams()) {
    if (up->name == req.stream || up->name == out.labels_stream ||
        up->kind == format::StreamKind::labels)
      continue;
    std::size_t cols = up->feature_names.size();
    std::vector<std::vector<double>> wz, cz;  // |z| per column, per group
    std::vector<std::optional<FeatureReference>> refs;
    std::vector<FeatureReference> fallback;
    StreamRank sr;
    sr.stream = up->name;
    sr.component = up->component;
    auto collect = [&](const std::vector<std::uint64_t>& ids, bool is_wrong) {
      for (const auto id : ids) {
        const auto row = view.find(up->name, id);
        if (!row) continue;
        ++(is_wrong ? sr.wrong_found : sr.correct_found);
        if (row->values.size() > cols) cols = row->values.size();
        if (wz.size() < cols) {
          wz.resize(cols);
          cz.resize(cols);
        }
        for (std::size_t j = 0; j < row->values.size(); ++j)
          (is_wrong ? wz : cz)[j].push_back(row->values[j]);  // raw values; |z| below
      }
    };
    collect(wrong_ids, true);
    if (sr.wrong_found == 0) continue;  // no shared ids: not upstream of these predictions
    collect(correct_ids, false);
    bool need_fallback = false;
    for (std::size_t j = 0; j < cols; ++j) {
      const std::string name =
          j < up->feature_names.size() ? up->feature_names[j] : "f" + std::to_string(j);
      refs.push_back(reference ? reference(up->name, name, j) : std::nullopt);
      need_fallback = need_fallback || !refs.back();
    }
    if (need_fallback) fallback = retained_reference(view, up->name, cols);
    for (std::size_t j = 0; j < cols; ++j) {
      FeatureRank f;
      f.column = j;
      f.feature = j < up->feature_names.size() ? up->feature_names[j] : "f" + std::to_string(j);
      f.reference = refs[j] ? *refs[j] : fallback[j];
      for (auto* v : {&wz[j], &cz[j]})
        for (double& x : *v) x = abs_z(x, f.reference);
      f.n_wrong = wz[j].size();
      f.n_correct = cz[j].size();
      f.wrong_mean_abs_z = mean_of(wz[j]);
      f.correct_mean_abs_z = mean_of(cz[j]);
      f.auc = mann_whitney_auc(wz[j], cz[j]);
      f.why = why_of(up->name, f);
      sr.features.push_back(std::move(f));
      std::vector<double>().swap(wz[j]);
      std::vector<double>().swap(cz[j]);
    }
    std::sort(sr.features.begin(), sr.features.end(), ranks_before);
    if (!sr.features.empty()) {
      sr.score = sr.features.front().auc;
      sr.why = "holds " + std::to_string(sr.wrong_found) + " of " +
               std::to_string(wrong_ids.size()) + " wrong and " + std::to_string(sr.correct_found) +
               " of " + std::to_string(correct_ids.size()) +
               " correct ids; most abnormal: " + sr.features.front().why;
    }
    out.streams.push_back(std::move(sr));
  }
  std::sort(out.streams.begin(), out.streams.end(), [](const StreamRank& a, const StreamRank& b) {
    if (a.features.empty() || b.features.empty()) return !a.features.empty() && b.features.empty();
    if (ranks_before(a.features.front(), b.features.front())) return true;
    if (ranks_before(b.features.front(), a.features.front())) return false;
    return a.stream < b.stream;
  });
  return out;
}

}  // namespace mltap::retention
