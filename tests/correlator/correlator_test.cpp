// Ranking, window, relations and bounds of the correlator.
#include <gtest/gtest.h>

#include <cmath>

#include "agent/correlator/correlator.hpp"
#include "test_events.hpp"

namespace mltap::correlator::test {

using core::EventKind;
using core::FileOp;
using core::ProcessRef;
using core::SystemEvent;

namespace {

using core::FindingKind;

const ProcessRef kProducer = proc(1000, 5000);
const ProcessRef kOldProducer = proc(900, 4000);

SystemEvent model_swapped(std::uint64_t t) {
  SystemEvent e = host(EventKind::file_change, t, proc(4242, 9000, "mv"));
  e.file_op = FileOp::renamed_onto;
  e.path = "/srv/models/model.onnx";
  e.old_path = "/srv/models/.model.onnx.tmp";
  return e;
}

SystemEvent restart_exit(std::uint64_t t) {
  SystemEvent e = tracked(EventKind::exit, t, kProducer, kProducer);
  e.exit_code = 0;
  return e;
}

SystemEvent other_oom(std::uint64_t t) {
  SystemEvent e = host(EventKind::oom_kill, t, proc(3000, 100, "postgres"));
  e.other = proc(3001, 101, "java");
  return e;
}

void add_story(Correlator& c) {
  c.add_event(model_swapped(kT0 - 5 * kMin));
  c.add_event(restart_exit(kT0 - 2 * kMin));
  c.add_event(other_oom(kT0 - 3 * kMin));
  SystemEvent fork = tracked(EventKind::fork, kT0 - 1 * kMin, kProducer, kProducer);
  fork.other = proc(1001, 5001);
  c.add_event(fork);
}

TEST(Relevance, RuleIsAsDocumented) {
  EXPECT_DOUBLE_EQ(recency(0, std::chrono::minutes(10)), 1.0);
  EXPECT_DOUBLE_EQ(recency(10 * kMin, std::chrono::minutes(10)), 0.75);
  EXPECT_NEAR(recency(1000 * kMin, std::chrono::minutes(10)), 0.5, 1e-9);
  const SystemEvent file = model_swapped(0);
  EXPECT_DOUBLE_EQ(kind_weight(file, FindingKind::drift), 1.0);
  EXPECT_DOUBLE_EQ(kind_weight(file, FindingKind::staleness), 0.4);
  EXPECT_DOUBLE_EQ(relation_weight(file, Relation::host), 0.8);
  EXPECT_DOUBLE_EQ(relation_weight(other_oom(0), Relation::host), 0.5);
  SystemEvent killed = restart_exit(0);
  killed.exit_code.reset();
  killed.signal = 9;
  EXPECT_GT(kind_weight(killed, FindingKind::drift), kind_weight(restart_exit(0), FindingKind::drift));
}

TEST(Related, DriftRanksTheModelSwapFirst) {
  Correlator c;
  add_story(c);
  const auto r = c.related(finding(FindingKind::drift), {{kProducer.pid, kProducer.start_ticks}});
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].event.kind, EventKind::file_change);
  EXPECT_EQ(r[0].relation, Relation::host);
  EXPECT_NEAR(r[0].score, 1.0 * 0.8 * (0.5 + 0.5 * std::exp2(-0.5)), 1e-12);
  EXPECT_NE(r[0].why.find("/srv/models/model.onnx"), std::string::npos) << r[0].why;
  EXPECT_NE(r[0].why.find("5m00s before the onset"), std::string::npos) << r[0].why;
  EXPECT_EQ(r[1].event.kind, EventKind::exit);
  EXPECT_EQ(r[1].relation, Relation::producer);
  EXPECT_EQ(r[2].event.kind, EventKind::oom_kill);
  EXPECT_EQ(r[3].event.kind, EventKind::fork);
  for (std::size_t i = 1; i < r.size(); ++i) EXPECT_GE(r[i - 1].score, r[i].score);
}

TEST(Related, StalenessRanksTheRestartFirst) {
  Correlator c;
  add_story(c);
  const auto r = c.related(finding(FindingKind::staleness), {{kProducer.pid, kProducer.start_ticks}});
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r[0].event.kind, EventKind::exit);
  EXPECT_EQ(r.back().event.kind, EventKind::fork);
}

TEST(Related, OnlyTheWindowBeforeTheFindingAndAShortGrace) {
  Correlator c;
  c.add_event(restart_exit(kT0 - 40 * kMin));  // outside a 30 min window
  c.add_event(restart_exit(kT0 - 29 * kMin));
  c.add_event(restart_exit(kT0 + 20 * kSec));  // within the 30 s grace
  c.add_event(restart_exit(kT0 + 2 * kMin));   // after
  const auto r = c.related(finding(FindingKind::drift), {{kProducer.pid, kProducer.start_ticks}},
                           std::chrono::minutes(30));
  ASSERT_EQ(r.size(), 2u);
  // The finding has no onset estimate: its opening is the onset, and what follows it is listed
  // after the candidate causes, however close.
  EXPECT_EQ(r[0].event.unix_ns, kT0 - 29 * kMin);
  EXPECT_FALSE(r[0].after_onset);
  EXPECT_EQ(r[1].event.unix_ns, kT0 + 20 * kSec);
  EXPECT_TRUE(r[1].after_onset);
  EXPECT_NE(r[1].why.find("20 s after the onset, 20 s after the finding opened"), std::string::npos) << r[1].why;
}

// The cascade of issue 12: a model file replaced by another process changes the predictions
// (onset), the finding opens a window later, and a replica is OOM-killed 11 s after that. The
// kill, the replica's SIGKILL exit and a restart are consequences: they never outrank the
// deployment, whatever their kind weight and proximity to the opening.
TEST(Related, EventsAfterTheOnsetNeverOutrankACauseBeforeIt) {
  Correlator c;
  const std::uint64_t deploy = kT0 - 50 * kSec, onset = kT0 - 45 * kSec;
  c.add_event(model_swapped(deploy));
  SystemEvent oom = tracked(EventKind::oom_kill, kT0 + 11 * kSec, kProducer, kProducer);
  oom.other = kProducer;
  c.add_event(oom);
  SystemEvent killed = tracked(EventKind::exit, kT0 + 11 * kSec + 1000, kProducer, kProducer);
  killed.signal = 9;
  c.add_event(killed);
  c.add_event(restart_exit(onset + 10 * kSec));     // between onset and opening: after the onset
  c.add_event(restart_exit(kT0 - 20 * kMin));       // long before: a weak candidate
  c.add_event(restart_exit(onset + 1 * kSec));      // within the onset margin: a candidate
  core::Finding f = finding(FindingKind::prediction_drift);
  f.onset_unix_ns = onset;
  f.onset_basis = "cusum";
  const auto r = c.related(f, {{kProducer.pid, kProducer.start_ticks}});
  ASSERT_EQ(r.size(), 6u);
  EXPECT_EQ(r[0].event.kind, EventKind::file_change) << r[0].why;
  EXPECT_NE(r[0].why.find("5 s before the onset"), std::string::npos) << r[0].why;
  EXPECT_EQ(r[1].event.unix_ns, onset + 1 * kSec);
  EXPECT_NE(r[1].why.find("at the onset"), std::string::npos) << r[1].why;
  EXPECT_EQ(r[2].event.unix_ns, kT0 - 20 * kMin);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_FALSE(r[i].after_onset) << i;
  // After the onset, oldest first, although the OOM kill scores higher than the candidates.
  EXPECT_TRUE(r[3].after_onset && r[4].after_onset && r[5].after_onset);
  EXPECT_EQ(r[3].event.unix_ns, onset + 10 * kSec);
  EXPECT_EQ(r[4].event.kind, EventKind::oom_kill);
  EXPECT_EQ(r[5].event.kind, EventKind::exit);
  EXPECT_GT(r[4].score, r[2].score) << "ranked by time, not by score";
  EXPECT_NE(r[4].why.find("56 s after the onset, 11 s after the finding opened"), std::string::npos) << r[4].why;
  // The same events, judged against the opening (no onset): the kill would lead the causes.
  core::Finding no_onset = finding(FindingKind::prediction_drift);
  const auto r2 = c.related(no_onset, {{kProducer.pid, kProducer.start_ticks}});
  EXPECT_EQ(r2[0].event.kind, EventKind::file_change);
  EXPECT_TRUE(r2.back().after_onset);
}

// A coarse onset (a window of records: the change showed somewhere in it) widens the candidates
// to its resolution; the 2 s margin is the minimum.
TEST(Related, OnsetResolutionWidensTheCandidates) {
  Correlator c;
  c.add_event(model_swapped(kT0 - 60 * kSec));
  c.add_event(restart_exit(kT0 - 5 * kSec));
  core::Finding f = finding(FindingKind::drift);
  f.onset_unix_ns = kT0 - 100 * kSec;
  f.onset_basis = "window";
  f.onset_resolution_ns = 90 * kSec;
  auto r = c.related(f, {{kProducer.pid, kProducer.start_ticks}});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].event.kind, EventKind::file_change);
  EXPECT_FALSE(r[0].after_onset);
  EXPECT_NE(r[0].why.find("at the onset"), std::string::npos) << r[0].why;
  EXPECT_TRUE(r[1].after_onset) << "95 s after the onset, beyond its 90 s resolution";
  f.onset_resolution_ns = 0;
  r = c.related(f, {{kProducer.pid, kProducer.start_ticks}});
  EXPECT_TRUE(r[0].after_onset && r[1].after_onset);
}

// An event older than the window before the onset is out, one in it is in, although the window
// is counted from the onset rather than from the opening.
TEST(Related, WindowCountsFromTheOnset) {
  Correlator c;
  c.add_event(restart_exit(kT0 - 35 * kMin));
  c.add_event(restart_exit(kT0 - 45 * kMin));
  core::Finding f = finding(FindingKind::drift);
  f.onset_unix_ns = kT0 - 10 * kMin;
  const auto r = c.related(f, {{kProducer.pid, kProducer.start_ticks}}, std::chrono::minutes(30));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].event.unix_ns, kT0 - 35 * kMin);
}

TEST(Related, OtherStreamsProducersAreNotRelated) {
  Correlator c;
  const ProcessRef stranger = proc(2000, 6000);
  c.add_event(tracked(EventKind::exit, kT0 - kMin, stranger, stranger, "training"));
  EXPECT_TRUE(c.related(finding(FindingKind::drift), {{kProducer.pid, kProducer.start_ticks}}).empty());
}

TEST(Related, PidReuseIsNotTheProducer) {
  Correlator c;
  const ProcessRef reused = proc(kProducer.pid, kProducer.start_ticks + 77);
  c.add_event(tracked(EventKind::exit, kT0 - kMin, reused, reused, "other"));
  EXPECT_TRUE(c.related(finding(FindingKind::drift), {{kProducer.pid, kProducer.start_ticks}}).empty());
}

TEST(Related, ChildrenSameComponentAndTriggeredHostEvents) {
  Correlator c;
  const ProcessRef child = proc(1001, 5001, "sh");
  const ProcessRef sibling = proc(1500, 5500);
  SystemEvent child_exit = tracked(EventKind::exit, kT0 - kMin, child, kProducer);
  child_exit.exit_code = 3;
  c.add_event(child_exit);
  SystemEvent sib = tracked(EventKind::signal, kT0 - kMin, sibling, sibling);
  sib.signal = 15;
  sib.fatal = true;
  c.add_event(sib);
  SystemEvent oom = other_oom(kT0 - kMin);
  oom.other = kProducer;  // the producer's allocation killed someone else
  c.add_event(oom);
  const auto r = c.related(finding(FindingKind::drift), {{kProducer.pid, kProducer.start_ticks}});
  ASSERT_EQ(r.size(), 3u);
  std::map<EventKind, Relation> rel;
  for (const auto& x : r) rel[x.event.kind] = x.relation;
  EXPECT_EQ(rel[EventKind::exit], Relation::producer_child);
  EXPECT_EQ(rel[EventKind::signal], Relation::same_component);
  EXPECT_EQ(rel[EventKind::oom_kill], Relation::producer);
}

TEST(Related, RemembersProducersThatDied) {
  Correlator c;
  c.note_producer("scores", "inference", {kOldProducer.pid, kOldProducer.start_ticks});
  c.note_producer("scores", "inference", {kProducer.pid, kProducer.start_ticks});
  SystemEvent oom = tracked(EventKind::oom_kill, kT0 - 3 * kMin, kOldProducer, kOldProducer);
  oom.other = kOldProducer;
  c.add_event(oom);
  // The detector only knows the live producer now.
  const auto r = c.related(finding(FindingKind::staleness), {{kProducer.pid, kProducer.start_ticks}});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].event.kind, EventKind::oom_kill);
  EXPECT_EQ(r[0].relation, Relation::producer);
  EXPECT_EQ(c.producers_of("scores").size(), 2u);
  EXPECT_TRUE(c.producers_of("nope").empty());
}

TEST(Related, AtMostMaxRelated) {
  CorrelatorConfig cfg;
  cfg.max_related = 3;
  Correlator c(cfg);
  for (int i = 0; i < 20; ++i) c.add_event(restart_exit(kT0 - static_cast<std::uint64_t>(i + 1) * kSec));
  EXPECT_EQ(c.related(finding(FindingKind::drift), {{kProducer.pid, kProducer.start_ticks}}).size(), 3u);
  // As many again after the onset (beyond its 2 s margin), the oldest ones.
  for (int i = 0; i < 20; ++i) c.add_event(restart_exit(kT0 + static_cast<std::uint64_t>(i + 1) * kSec));
  const auto r = c.related(finding(FindingKind::drift), {{kProducer.pid, kProducer.start_ticks}});
  ASSERT_EQ(r.size(), 6u);
  EXPECT_FALSE(r[2].after_onset);
  EXPECT_EQ(r[0].event.unix_ns, kT0 + kSec) << "within the margin: a candidate, the closest";
  EXPECT_TRUE(r[3].after_onset);
  EXPECT_EQ(r[3].event.unix_ns, kT0 + 3 * kSec);
  EXPECT_EQ(r[5].event.unix_ns, kT0 + 5 * kSec);
}

TEST(Bounds, PerProcessTimelineKeepsTheNewest) {
  CorrelatorConfig cfg;
  cfg.max_events_per_process = 4;
  Correlator c(cfg);
  for (int i = 0; i < 10; ++i) c.add_event(restart_exit(kT0 + static_cast<std::uint64_t>(i) * kSec));
  const auto t = c.events_for({{kProducer.pid, kProducer.start_ticks}}, 0);
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t.front().unix_ns, kT0 + 6 * kSec);
  EXPECT_EQ(t.back().unix_ns, kT0 + 9 * kSec);
  EXPECT_EQ(c.stats().dropped, 6u);
  EXPECT_EQ(c.stats().events, 4u);
}

TEST(Bounds, LeastRecentlyActiveTimelineIsDropped) {
  CorrelatorConfig cfg;
  cfg.max_processes = 2;
  Correlator c(cfg);
  const ProcessRef a = proc(1, 1), b = proc(2, 2), d = proc(3, 3);
  c.add_event(tracked(EventKind::exec, kT0 + 1, a, a));
  c.add_event(tracked(EventKind::exec, kT0 + 2, b, b));
  c.add_event(tracked(EventKind::exec, kT0 + 3, a, a));  // a active again
  c.add_event(tracked(EventKind::exec, kT0 + 4, d, d));  // evicts b
  EXPECT_EQ(c.stats().timelines, 2u);
  EXPECT_TRUE(c.events_for({{2, 2}}, 0, false).empty());
  EXPECT_EQ(c.events_for({{1, 1}}, 0, false).size(), 2u);
  EXPECT_EQ(c.events_for({{3, 3}}, 0, false).size(), 1u);
}

TEST(Bounds, HostEventsAndRetention) {
  CorrelatorConfig cfg;
  cfg.max_host_events = 3;
  cfg.retention = std::chrono::hours(1);
  Correlator c(cfg);
  for (int i = 0; i < 5; ++i) c.add_event(other_oom(kT0 + static_cast<std::uint64_t>(i) * kSec));
  EXPECT_EQ(c.events_for({}, 0).size(), 3u);
  c.add_event(restart_exit(kT0 + 2 * 60 * kMin));  // two hours later: all older events expire
  EXPECT_TRUE(c.events_for({}, 0).empty());
  EXPECT_EQ(c.events_for({{kProducer.pid, kProducer.start_ticks}}, 0).size(), 1u);
}

TEST(Timeline, SortedSinceAndLimited) {
  Correlator c;
  const ProcessRef child = proc(1001, 5001, "sh");
  c.add_event(tracked(EventKind::exec, kT0 + 3 * kSec, child, kProducer));
  c.add_event(tracked(EventKind::fork, kT0 + 1 * kSec, kProducer, kProducer));
  c.add_event(model_swapped(kT0 + 2 * kSec));
  c.add_event(tracked(EventKind::exec, kT0 - 10 * kSec, kProducer, kProducer));
  const auto t = c.events_for({{kProducer.pid, kProducer.start_ticks}}, kT0);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].kind, EventKind::fork);
  EXPECT_EQ(t[1].kind, EventKind::file_change);
  EXPECT_EQ(t[2].kind, EventKind::exec);
  EXPECT_EQ(c.events_for({{kProducer.pid, kProducer.start_ticks}}, kT0, false).size(), 2u);
  EXPECT_EQ(c.events_for({{kProducer.pid, kProducer.start_ticks}}, 0, true, 2).size(), 2u);
}

TEST(Concurrency, AddAndQueryFromSeveralThreads) {
  Correlator c;
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop) {
      (void)c.related(finding(FindingKind::drift), {{kProducer.pid, kProducer.start_ticks}});
      (void)c.events_for({{kProducer.pid, kProducer.start_ticks}}, 0);
    }
  });
  for (int i = 0; i < 5000; ++i) {
    c.add_event(restart_exit(kT0 - static_cast<std::uint64_t>(i % 100) * kSec));
    if (i % 7 == 0) c.add_event(other_oom(kT0 - kSec));
  }
  stop = true;
  reader.join();
  EXPECT_LE(c.stats().events, c.config().max_events_per_process + c.config().max_host_events);
}

}  // namespace
}  // namespace mltap::correlator::test
