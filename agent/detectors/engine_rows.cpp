// Row intake: rows are staged and processed in column-wise chunks, bounded by what is left of the
// pinning phase, the sequential block and the window, so that each of those ends exactly on a row.
#include <algorithm>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {
namespace {

std::size_t room(const StreamState& s) {
  if (!s.ready) return static_cast<std::size_t>((s.pinned < s.pin_phase_a ? s.pin_phase_a : s.pin_target) - s.pinned);
  const std::uint64_t w = s.st.window_records - s.window_rows;
  const std::uint64_t b = s.st.sequential.block_records - s.block_rows;
  return static_cast<std::size_t>(std::min(w, b));
}

void accumulate_vectors(StreamState& s, const double* base, std::size_t n, std::size_t stride) {
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

// With many streams, a stream's bins are seldom in the cache when its records come: counting a
// value is then a chain of dependent misses (grid cell, edges, count), one after another. Every
// feature's arrays are asked for when a block starts, so that their misses overlap (asking only
// for the next feature's while one is counted gained nothing measurable; all of them at once
// took 1,000 streams from ~29% to ~26% of a core: docs/benchmarks.md, "Cost by number of
// streams"). A stream's hot arrays, ~17 cache lines per feature, fit the L2 cache many times.
void prefetch_feature(const Feature& f) noexcept {
  if (!f.enabled || f.kind != FeatureKind::numeric) return;
  f.num.lookup.prefetch();
  const auto* c = f.ncur.counts.data();
  for (std::size_t i = 0; i < f.ncur.counts.size(); i += 16) __builtin_prefetch(c + i, 1);
  if (!f.cusum.empty()) __builtin_prefetch(f.cusum.data(), 1);
}

void process_chunk(EngineState& e, StreamState& s, const double* base, std::size_t n, std::size_t stride) {
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
    s.record_index += n;
    return;
  }
  if (s.window_rows == 0) s.window_first_ns = s.rec_ns;
  if (s.block_rows == 0) s.block_first_ns = s.rec_ns;
  s.clock.note(s.record_index, s.rec_ns);
  for (const auto& f : s.feats) prefetch_feature(f);
  for (std::size_t j = 0; j < s.feats.size(); ++j) {
    auto& f = s.feats[j];
    if (!f.enabled) continue;
    if (f.kind == FeatureKind::numeric) add_numeric(f.num, f.ncur, m + f.column, n, ms);
    else add_categorical(f.cat(), f.ccur(), m + f.column, n, ms);
  }
  run_cusum(e, s, m, n, ms);
  s.record_index += n;
  s.window_rows += n;
  s.block_rows += n;
}

void process_rows(EngineState& e, StreamState& s, const double* base, std::size_t rows, std::size_t stride) {
  while (rows > 0) {
    const std::size_t take = std::min({rows, s.chunk, room(s)});
    process_chunk(e, s, base, take, stride);
    base += take * stride;
    rows -= take;
    if (!s.ready) {
      if (s.pinned == s.pin_phase_a) {
        for (auto& f : s.feats) f.pin->fit();
      }
      if (s.pinned >= s.pin_target) finish_pinning(e, s);
    } else {
      if (s.look_every > 0 && s.record_index - s.look_last >= s.look_every) look(e, s);
      if (s.block_rows >= s.st.sequential.block_records) end_block(e, s);
      if (s.window_rows >= s.st.window_records) close_window(e, s);
    }
  }
}

}  // namespace

void flush_staging(EngineState& e, StreamState& s) {
  if (e.stage_owner != &s) return;
  e.stage_owner = nullptr;
  if (s.staged == 0) return;
  const std::size_t n = s.staged;
  s.staged = 0;
  process_rows(e, s, e.staging.data(), n, s.in_cols);
}

void flush_staging(EngineState& e) {
  if (e.stage_owner) flush_staging(e, *e.stage_owner);
}

void add_rows(EngineState& e, StreamState& s, const core::DecodedBatch& b) {
  if (!s.analyzable || s.feats.empty()) return;
  const std::size_t cols = s.in_cols;
  // Small records wait in the engine's staging buffer for a column-wise block of at most
  // kStageRows rows (EngineState::staging); a batch of that many rows or more is processed in
  // place. Another stream's rows are processed first: the buffer holds one stream at a time.
  const std::size_t stage = std::min(s.chunk, kStageRows);
  if (e.stage_owner != &s) flush_staging(e);
  if (s.staged == 0 && b.rows >= stage) {
    process_rows(e, s, b.values.data(), b.rows, cols);
    return;
  }
  if (e.staging.size() < stage * cols) e.staging.resize(stage * cols);
  e.stage_owner = &s;
  for (std::size_t r = 0; r < b.rows; ++r) {
    std::copy_n(b.values.data() + r * cols, cols, e.staging.data() + s.staged * cols);
    if (++s.staged == stage) {
      flush_staging(e, s);
      e.stage_owner = &s;
    }
  }
  if (s.staged == 0) e.stage_owner = nullptr;
}

}  // namespace mltap::detectors
