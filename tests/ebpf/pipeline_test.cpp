// From the kernel to the finding: the real tracer feeds the correlator, and a finding on a
// stream lists the events of that stream's producer (and not another stream's).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "agent/api/event_json.hpp"
#include "agent/correlator/correlator.hpp"
#include "bpf/src/wall_clock.hpp"
#include "ebpf_test_util.hpp"

namespace mltap::bpf::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

TEST(TracerToCorrelator, FindingListsItsProducersEvents) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  const fs::path dir = fs::temp_directory_path() / ("mltap-pipeline-" + std::to_string(getpid()));
  fs::create_directories(dir / "models");
  TracerConfig cfg;
  cfg.files.watch_dirs = {(dir / "models").string()};
  correlator::Correlator correlator;
  EventLog log;
  auto record = log.callback();
  Tracer t(cfg);
  t.start([&](const core::SystemEvent& e) {
    correlator.add_event(e);
    record(e);
  });
  Child scorer({"exec-exit", "3"});   // producer of stream "scores"
  Child trainer({"exec-exit", "0"});  // producer of another stream
  ASSERT_EQ(t.track(scorer.upid(), scorer.start_ticks(), "inference"), TrackResult::tracked);
  ASSERT_EQ(t.track(trainer.upid(), trainer.start_ticks(), "training"), TrackResult::tracked);
  correlator.note_producer("scores", "inference", {scorer.upid(), scorer.start_ticks()});
  correlator.note_producer("train-loss", "training", {trainer.upid(), trainer.start_ticks()});
  scorer.go();
  trainer.go();
  ASSERT_EQ(scorer.wait(), 0);
  ASSERT_EQ(trainer.wait(), 0);
  // Someone replaces the model the scorer loads.
  Child deployer({"rename", (dir / "models/.new").string(), (dir / "models/model.onnx").string()});
  deployer.go();
  ASSERT_EQ(deployer.wait(), 0);
  ASSERT_TRUE(log.wait_for([&](const core::SystemEvent& e) {
    return e.kind == core::EventKind::file_change && e.subject.pid == deployer.upid();
  }));
  ASSERT_TRUE(log.wait_for([&](const core::SystemEvent& e) {
    return e.kind == core::EventKind::exit && e.subject.pid == trainer.upid();
  }));

  core::Finding f;
  f.id = 1;
  f.stream = "scores";
  f.component = "inference";
  f.kind = core::FindingKind::drift;
  f.opened_unix_ns = WallClock::unix_now_ns();
  const auto related = correlator.related(f, {});
  ASSERT_FALSE(related.empty());
  EXPECT_EQ(related[0].event.kind, core::EventKind::file_change) << related[0].why;
  EXPECT_EQ(related[0].event.path, (dir / "models/model.onnx").string());
  bool child_exit = false;
  for (const auto& r : related) {
    EXPECT_NE(r.event.root.pid, trainer.upid()) << "another stream's producer: " << r.why;
    if (r.event.kind == core::EventKind::exit && r.event.exit_code == 3) {
      child_exit = true;
      EXPECT_EQ(r.relation, correlator::Relation::producer_child);
      EXPECT_EQ(r.event.root.pid, scorer.upid());
    }
  }
  EXPECT_TRUE(child_exit) << "the scorer's child exiting with code 3 must be related";
  const auto timeline = correlator.events_for({{scorer.upid(), scorer.start_ticks()}}, 0, false);
  ASSERT_GE(timeline.size(), 4u);  // fork, exec, exit(3) of the child, exit(0) of the scorer
  for (std::size_t i = 1; i < timeline.size(); ++i) {
    EXPECT_LE(timeline[i - 1].unix_ns, timeline[i].unix_ns);
  }
  fs::remove_all(dir);
}

TEST(FileWatchAtRunTime, DirectoriesCreatedLaterAreWatched) {
  if (geteuid() != 0) GTEST_SKIP() << "must run as root";
  const fs::path dir = fs::temp_directory_path() / ("mltap-later-" + std::to_string(getpid()));
  fs::remove_all(dir);
  TracerConfig cfg;
  for (auto& p : cfg.probes) p = false;
  cfg.probes[static_cast<std::size_t>(Probe::file_watch)] = true;
  cfg.files.watch_dirs = {(dir / "a").string()};
  EventLog log;
  Tracer t(cfg);
  t.start(log.callback());
  auto st = t.probe_status()[static_cast<std::size_t>(Probe::file_watch)];
  EXPECT_FALSE(st.up);
  EXPECT_NE(st.reason.find("cannot be watched yet"), std::string::npos) << st.reason;
  fs::create_directories(dir / "a");
  fs::create_directories(dir / "b");
  for (int i = 0; i < 40 && !t.probe_status()[static_cast<std::size_t>(Probe::file_watch)].up; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(t.probe_status()[static_cast<std::size_t>(Probe::file_watch)].up);
  ASSERT_TRUE(t.watch_directory((dir / "b").string()));
  EXPECT_FALSE(t.watch_directory((dir / "missing").string()));
  std::ofstream(dir / "a" / "own.gguf") << "x";  // the agent's own write: ignored
  Child wa({"write", (dir / "a" / "m.gguf").string()});
  Child wb({"write", (dir / "b" / "m.h5").string()});
  wa.go();
  wb.go();
  ASSERT_EQ(wa.wait(), 0);
  ASSERT_EQ(wb.wait(), 0);
  EXPECT_TRUE(log.wait_for([&](const core::SystemEvent& e) { return e.path == (dir / "a" / "m.gguf").string(); }));
  EXPECT_TRUE(log.wait_for([&](const core::SystemEvent& e) { return e.path == (dir / "b" / "m.h5").string(); }));
  EXPECT_TRUE(log.matching([](const core::SystemEvent& e) {
                   return e.subject.pid == static_cast<std::uint32_t>(getpid());
                 }).empty())
      << "the agent's own writes are not reported";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mltap::bpf::test
