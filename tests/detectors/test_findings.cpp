// Findings' onsets and material changes (issue 12): when a change began, and that a new problem
// inside an open finding is a new finding rather than an update of the old one.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "agent/api/detector_json.hpp"
#include "agent/detectors/engine.hpp"
#include "core/state_store.hpp"
#include "engine_feed.hpp"

using namespace mltap;
using namespace mltap::detectors;
using namespace mltap::detectors::test;
using core::Severity;
using mltap::api::to_json;

namespace {

const Finding* closed_finding(const DetectorSnapshot& s, std::uint64_t id) {
  for (const auto& f : s.closed_findings) {
    if (f.id == id) return &f;
  }
  return nullptr;
}

std::vector<std::string> top_names(const Finding& f) {
  std::vector<std::string> out;
  for (const auto& t : f.top) out.push_back(t.feature);
  return out;
}

bool has_name(const Finding& f, const std::string& n) {
  const auto v = top_names(f);
  return std::find(v.begin(), v.end(), n) != v.end();
}

double seconds_between(std::uint64_t a, std::uint64_t b) {
  return (static_cast<double>(a) - static_cast<double>(b)) / 1e9;
}

}  // namespace

// A mean shift in the middle of a 5 s window: the drift finding opens at a fast look well before
// the window ends (engine_looks.cpp), the sequential one a block after the change; both date the
// change within a block (0.5 s) of when it happened, where the window's first record is 3 s off.
TEST(Onset, WindowDriftAndSequentialChangeDateTheChange) {
  EngineConfig c = small_config();
  c.defaults.window_records = 5000;
  DetectorEngine e(c);
  Feed f(e, "s", 4);
  std::mt19937_64 g(21);
  std::normal_distribution<double> d;
  double shift = 0;
  auto gen = [&](double* r) {
    for (int k = 0; k < 4; ++k) r[k] = d(g);
    r[1] += shift;
  };
  f.run(4000 + 5000 + 3000, 50, gen);  // pinned, one clean window, 3 s into the next
  const std::uint64_t change = f.now;
  const std::uint64_t window_first = change - 3 * kSec;
  shift = 1.0;
  f.run(2000 + 5000, 50, gen);
  const auto s = e.snapshot();
  const Finding* drift = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(drift, nullptr) << to_json(*s).dump(1);
  EXPECT_EQ(drift->top.front().feature, "f1");
  EXPECT_EQ(drift->onset_basis, "cusum");
  EXPECT_LE(drift->onset_unix_ns, drift->opened_unix_ns);
  // The record clock's span around the onset record: a batch of 50 rows at 1000/s here.
  EXPECT_GT(drift->onset_resolution_ns, 0u);
  EXPECT_LE(drift->onset_resolution_ns, 1100 * kSec / 1000);
  // Opened by a fast look after the change and before the window ended (2 s after the change).
  EXPECT_GE(drift->opened_unix_ns, change);
  EXPECT_LT(drift->opened_unix_ns, change + kSec) << "opened by a fast look, not at the window's end";
  EXPECT_LT(std::abs(seconds_between(drift->onset_unix_ns, change)), 0.6)
      << "onset " << seconds_between(drift->onset_unix_ns, change) << " s from the change";
  EXPECT_GT(drift->onset_unix_ns, window_first + kSec);
  const Finding* seq = open_finding(*s, "s", FindingKind::sequential_change);
  ASSERT_NE(seq, nullptr) << to_json(*s).dump(1);
  EXPECT_EQ(seq->onset_basis, "cusum");
  EXPECT_LT(std::abs(seconds_between(seq->onset_unix_ns, change)), 0.6);
  EXPECT_GE(seq->opened_unix_ns, change);
  // In the findings JSON.
  const auto j = to_json(*drift);
  EXPECT_EQ(j["onset_unix_ns"].get<std::uint64_t>(), drift->onset_unix_ns);
  EXPECT_EQ(j["onset_basis"], "cusum");
  EXPECT_EQ(j["supersedes"].get<std::uint64_t>(), 0u);
}

// Quality is judged per window: its onset is the first record of the window that showed it.
// Without sequential detectors, drift is dated by the fast look's segment (or the window).
TEST(Onset, QualityAndDriftWithoutCusumUseTheFirstWindow) {
  EngineConfig c = small_config();
  c.defaults.sequential.enabled = false;
  DetectorEngine e(c);
  Feed f(e, "s", 3);
  std::mt19937_64 g(22);
  std::normal_distribution<double> d;
  bool bad = false;
  auto gen = [&](double* r) {
    for (int k = 0; k < 3; ++k) r[k] = d(g);
    if (bad) {
      r[0] = std::nan("");
      r[2] += 2;
    }
  };
  f.run(4000 + 2000 + 1000, 50, gen);
  const std::uint64_t window_first = f.now - kSec;
  bad = true;
  f.run(1000, 50, gen);
  const auto s = e.snapshot();
  const Finding* q = open_finding(*s, "s", FindingKind::data_quality);
  ASSERT_NE(q, nullptr) << to_json(*s).dump(1);
  EXPECT_EQ(q->onset_basis, "window");
  EXPECT_EQ(q->onset_unix_ns, window_first);
  // The problem showed somewhere in that window (2000 rows at 1000/s): up to its last batch.
  EXPECT_GT(q->onset_resolution_ns, 19 * kSec / 10);
  EXPECT_LE(q->onset_resolution_ns, 2 * kSec);
  const Finding* drift = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(drift, nullptr);
  EXPECT_EQ(drift->onset_basis, "window");
  // Opened by a fast look (engine_looks.cpp): dated at the first record of its segment, at or
  // after the window's first and no later than the change, which lies within the resolution.
  EXPECT_GE(drift->onset_unix_ns, window_first);
  EXPECT_LE(drift->onset_unix_ns, window_first + kSec);
  EXPECT_GE(drift->onset_unix_ns + drift->onset_resolution_ns, window_first + kSec);
}

// Issue 12's masking case: drift open on f0; more of the same stays one finding; then a unit bug
// on f4 (values x1000) is a new drift finding superseding the first, and a data-quality finding;
// then a quality problem of a kind not seen before (NaN on f2) supersedes that one too.
TEST(Masking, NewFeaturesAndNewQualityProblemsAreNewFindings) {
  DetectorEngine e(small_config());
  Feed f(e, "s", 6);
  std::mt19937_64 g(23);
  std::normal_distribution<double> d;
  double shift = 0, scale4 = 1;
  bool nan2 = false;
  auto gen = [&](double* r) {
    for (int k = 0; k < 6; ++k) r[k] = d(g);
    r[0] += shift;
    r[4] *= scale4;
    if (nan2 && d(g) > 0) r[2] = std::nan("");
  };
  f.run(8000, 64, gen);
  shift = 0.6;
  f.run(4000, 64, gen);
  auto s = e.snapshot();
  const Finding* a = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(a, nullptr) << to_json(*s).dump(1);
  EXPECT_EQ(top_names(*a), std::vector<std::string>{"f0"});
  const std::uint64_t id_a = a->id, onset_a = a->onset_unix_ns;

  f.run(10000, 64, gen);  // more of the same on f0: five more windows, one finding
  s = e.snapshot();
  a = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->id, id_a);
  EXPECT_EQ(a->onset_unix_ns, onset_a);
  EXPECT_EQ(s->counters.findings_superseded, 0u);
  EXPECT_EQ(open_finding(*s, "s", FindingKind::data_quality), nullptr);

  const std::uint64_t bug = f.now;
  scale4 = 1000;
  f.run(2500, 64, gen);  // (a window and then some: rows are staged in 64-row chunks)
  s = e.snapshot();
  const Finding* b = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(b, nullptr) << to_json(*s).dump(1);
  EXPECT_NE(b->id, id_a);
  EXPECT_EQ(b->supersedes, id_a);
  EXPECT_TRUE(has_name(*b, "f4")) << to_json(*b).dump();
  EXPECT_TRUE(has_name(*b, "f0")) << to_json(*b).dump();
  // The new finding dates the new change (within a 512-record block), not the old one.
  EXPECT_GE(b->onset_unix_ns + kSec / 2, bug);
  EXPECT_GT(b->onset_unix_ns, onset_a + 10 * kSec);
  const Finding* closed_a = closed_finding(*s, id_a);
  ASSERT_NE(closed_a, nullptr);
  EXPECT_FALSE(closed_a->open());
  EXPECT_EQ(closed_a->closed_unix_ns, b->opened_unix_ns);
  // (The sequential finding, open on f0 too, is superseded by f4's alarm the same way.)
  const auto superseded = s->counters.findings_superseded;
  EXPECT_GE(superseded, 1u);
  const Finding* q = open_finding(*s, "s", FindingKind::data_quality);
  ASSERT_NE(q, nullptr) << "values x1000 fall out of the reference's range";
  const std::uint64_t id_b = b->id, id_q = q->id;

  f.run(8000, 64, gen);  // more of the same on f0 and f4
  s = e.snapshot();
  ASSERT_NE(open_finding(*s, "s", FindingKind::drift), nullptr);
  EXPECT_EQ(open_finding(*s, "s", FindingKind::drift)->id, id_b);
  ASSERT_NE(open_finding(*s, "s", FindingKind::data_quality), nullptr);
  EXPECT_EQ(open_finding(*s, "s", FindingKind::data_quality)->id, id_q);
  EXPECT_EQ(s->counters.findings_superseded, superseded);

  nan2 = true;  // a NaN rate on f2: a quality problem this finding has not reported
  f.run(2500, 64, gen);
  s = e.snapshot();
  q = open_finding(*s, "s", FindingKind::data_quality);
  ASSERT_NE(q, nullptr);
  EXPECT_NE(q->id, id_q);
  EXPECT_EQ(q->supersedes, id_q);
  bool nan_reported = false;
  for (const auto& t : q->top) nan_reported |= t.feature == "f2" && t.method == "nan_rate";
  EXPECT_TRUE(nan_reported) << to_json(*q).dump();
}

// A severity above any the finding had is a new finding with the old onset (the same change,
// grown worse); falling back and rising again to a severity already reported is not.
TEST(Masking, SeverityRiseSupersedesOnceKeepingTheOnset) {
  DetectorEngine e(small_config());
  Feed f(e, "s", 6);
  std::mt19937_64 g(24);
  std::normal_distribution<double> d;
  double shift = 0;
  auto gen = [&](double* r) {
    for (int k = 0; k < 6; ++k) r[k] = d(g);
    r[0] += shift;
  };
  f.run(8000, 64, gen);
  shift = 0.2;  // W1/sd about 0.2: twice the 0.1 threshold, below the 2.5x of critical
  f.run(4000, 64, gen);
  auto s = e.snapshot();
  const Finding* a = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(a, nullptr) << to_json(*s).dump(1);
  ASSERT_EQ(a->severity, Severity::warning) << to_json(*a).dump();
  const std::uint64_t id_a = a->id, onset_a = a->onset_unix_ns;
  shift = 1.0;
  f.run(2500, 64, gen);
  s = e.snapshot();
  const Finding* b = open_finding(*s, "s", FindingKind::drift);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->severity, Severity::critical);
  EXPECT_EQ(b->supersedes, id_a);
  EXPECT_EQ(b->onset_unix_ns, onset_a);
  const std::uint64_t id_b = b->id;
  shift = 0.2;
  f.run(4000, 64, gen);
  shift = 1.0;
  f.run(4000, 64, gen);
  s = e.snapshot();
  ASSERT_NE(open_finding(*s, "s", FindingKind::drift), nullptr);
  EXPECT_EQ(open_finding(*s, "s", FindingKind::drift)->id, id_b);
}

// Onsets and what a finding has seen survive a restart; a state document written before they
// existed still loads (onset: the opening) and more of the same does not supersede it.
TEST(Onset, KeptAcrossRestartsAndOldDocumentsLoad) {
  const fs::path dir = tmpdir() / "onset";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::mt19937_64 g(25);
  std::normal_distribution<double> d;
  double shift = 0;
  auto gen = [&](double* r) {
    for (int k = 0; k < 3; ++k) r[k] = d(g);
    r[1] += shift;
  };
  std::uint64_t id = 0, onset = 0, now = 0;
  std::vector<core::StateDocument> docs;
  {
    DetectorEngine a(small_config());
    Feed f(a, "s", 3);
    f.run(8000, 64, gen);
    shift = 0.8;
    f.run(4000, 64, gen);
    const Finding* fd = open_finding(*a.snapshot(), "s", FindingKind::drift);
    ASSERT_NE(fd, nullptr);
    ASSERT_LT(fd->onset_unix_ns, fd->opened_unix_ns);
    id = fd->id;
    onset = fd->onset_unix_ns;
    now = f.now;
    docs = a.checkpoint();
  }
  auto reload = [&](const std::vector<core::StateDocument>& ds) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    core::StateStore store(dir.string());
    std::vector<std::string> errors;
    EXPECT_EQ(store.write_all(ds, errors), ds.size());
    std::vector<std::pair<std::string, core::StateReadResult>> out;
    for (const auto& n : store.list("detectors.")) out.emplace_back(n, store.read(n, 1));
    return out;
  };
  for (const bool old_format : {false, true}) {
    auto ds = docs;
    if (old_format) {
      for (auto& doc : ds) {
        if (doc.name.rfind("detectors.stream-", 0) != 0) continue;
        auto j = nlohmann::json::parse(doc.data);
        for (auto& fj : j["findings"]) {
          for (const char* k : {"onset_unix_ns", "onset_basis", "supersedes", "seen", "seen_severity"}) {
            ASSERT_TRUE(fj.contains(k)) << k;
            fj.erase(k);
          }
        }
        doc.data = j.dump();
      }
    }
    DetectorEngine b(small_config());
    EXPECT_TRUE(b.restore(reload(ds)).empty());
    const Finding* fd = open_finding(*b.snapshot(), "s", FindingKind::drift);
    ASSERT_NE(fd, nullptr);
    EXPECT_EQ(fd->id, id);
    EXPECT_EQ(fd->onset_or_opened(), old_format ? fd->opened_unix_ns : onset) << old_format;
    EXPECT_EQ(to_json(*fd)["onset_basis"], old_format ? "opened" : "cusum");
    Feed f(b, "s", 3);
    f.now = now + 60 * kSec;
    f.run(6000, 64, gen);  // the same change continues: the same finding
    const auto s = b.snapshot();
    fd = open_finding(*s, "s", FindingKind::drift);
    ASSERT_NE(fd, nullptr);
    EXPECT_EQ(fd->id, id) << old_format << to_json(*s).dump(1);
    EXPECT_EQ(s->counters.findings_superseded, 0u);
  }
  fs::remove_all(dir);
}
