// ReactionEngine end to end inside the process: real programs, real signals, real files; the
// ControlPlane is a recording stand-in for the ingest layer's.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "agent/reactions/reaction_engine.hpp"
#include "mltap/naming.hpp"
#include "core/config_reader.hpp"
#include "support/recording_control_plane.hpp"
#include "support/test_util.hpp"

extern char** environ;

namespace mltap::reactions {

using core::AlertEvent;
using core::AlertStatus;
using core::LabelSet;
using core::ReactionResult;
using core::RetainedRecord;

namespace {

using namespace std::chrono_literals;
using testing::RecordingControlPlane;

ReactionsConfig config_from(const std::string& yaml) {
  auto root = core::load_text(yaml, "test.yaml");
  return parse_reactions_config(core::ConfigSection(root, "test.yaml", "").child("reactions"));
}

AlertEvent alert(const std::string& fingerprint, AlertStatus status, LabelSet labels) {
  AlertEvent a;
  a.fingerprint = fingerprint;
  a.status = status;
  a.labels = std::move(labels);
  a.starts_at = "2024-05-01T12:00:00Z";
  a.ends_at = "0001-01-01T00:00:00Z";
  a.receiver = "mltapd";
  return a;
}

const LabelSet kDrift = {{"alertname", "MltapStreamDrift"}, {"stream", "fraud"}, {"severity", "critical"}};

LabelSet with(LabelSet base, const std::string& k, const std::string& v) {
  base[k] = v;
  return base;
}

struct Fixture {
  mltap::testing::TempDir dir;
  RecordingControlPlane control;
  std::unique_ptr<ReactionEngine> engine;

  std::string audit_path() const { return dir.file("audit.jsonl"); }
  void make(const std::string& actions_yaml, const std::string& extra = "", SnapshotProviders providers = {}) {
    const std::string yaml = "reactions:\n  audit_log: " + audit_path() + "\n" + extra + "  actions:\n" + actions_yaml;
    engine = std::make_unique<ReactionEngine>(config_from(yaml), control, std::move(providers));
    engine->start();
  }
  void submit(AlertEvent a) { ASSERT_EQ(engine->submit(std::move(a)), ReactionEngine::Submit::accepted); }
  void idle() { ASSERT_TRUE(engine->wait_idle(20s)); }
  std::vector<nlohmann::json> audit() const { return mltap::testing::read_json_lines(audit_path()); }
  std::uint64_t count(const std::string& reaction, ReactionResult r) const {
    const auto& names = engine->counters().reactions();
    const auto i = std::find(names.begin(), names.end(), reaction) - names.begin();
    return engine->counters().get(static_cast<std::size_t>(i), r);
  }
  std::vector<std::string> results() const {
    std::vector<std::string> out;
    for (const auto& a : audit()) out.push_back(a["result"]);
    return out;
  }
};

const std::string kFlagReaction = R"(    fallback:
      type: producer-flag
      matchers: ['alertname = "MltapStreamDrift"', 'severity =~ "critical|warning"']
      flag: use_fallback
)";

TEST(ReactionEngine, FlagIsSetOnFiringAndClearedOnResolve) {
  Fixture f;
  f.make(kFlagReaction);
  f.submit(alert("aa01", AlertStatus::firing, kDrift));
  f.idle();
  EXPECT_EQ(f.control.flag("fraud", "use_fallback"), 1u);
  f.submit(alert("aa01", AlertStatus::resolved, kDrift));
  f.idle();
  EXPECT_EQ(f.control.flag("fraud", "use_fallback"), 0u);
  const auto lines = f.audit();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["reaction"], "fallback");
  EXPECT_EQ(lines[0]["type"], "producer-flag");
  EXPECT_EQ(lines[0]["action"], "apply");
  EXPECT_EQ(lines[0]["result"], "ok");
  EXPECT_EQ(lines[0]["target"], "fraud");
  EXPECT_EQ(lines[0]["alert"]["fingerprint"], "aa01");
  EXPECT_EQ(lines[0]["alert"]["alertname"], "MltapStreamDrift");
  EXPECT_TRUE(lines[0].contains("time"));
  EXPECT_EQ(lines[1]["action"], "undo");
  EXPECT_EQ(lines[1]["result"], "undone");
  EXPECT_EQ(f.count("fallback", ReactionResult::ok), 1u);
  EXPECT_EQ(f.count("fallback", ReactionResult::undone), 1u);
}

TEST(ReactionEngine, NonMatchingAlertsDoNothing) {
  Fixture f;
  f.make(kFlagReaction);
  f.submit(alert("aa02", AlertStatus::firing, with(kDrift, "severity", "info")));
  f.submit(alert("aa03", AlertStatus::firing, with(kDrift, "alertname", "Other")));
  f.idle();
  EXPECT_TRUE(f.control.flag_calls().empty());
  EXPECT_TRUE(f.audit().empty());
}

TEST(ReactionEngine, FlagStaysWhileAnotherAlertHoldsIt) {
  Fixture f;
  f.make(kFlagReaction);
  f.submit(alert("a1", AlertStatus::firing, kDrift));
  f.submit(alert("b2", AlertStatus::firing, with(kDrift, "severity", "warning")));
  f.submit(alert("a1", AlertStatus::resolved, kDrift));
  f.idle();
  EXPECT_EQ(f.control.flag("fraud", "use_fallback"), 1u);
  f.submit(alert("b2", AlertStatus::resolved, with(kDrift, "severity", "warning")));
  f.idle();
  EXPECT_EQ(f.control.flag("fraud", "use_fallback"), 0u);
  EXPECT_EQ(f.control.flag_calls().size(), 2u);  // set once, cleared once
  EXPECT_EQ(f.results(), (std::vector<std::string>{"ok", "already_active", "undone"}));
}

TEST(ReactionEngine, FailedControlActionIsNotUndone) {
  Fixture f;
  f.make(kFlagReaction);
  f.control.fail_with("no live segment");
  f.submit(alert("c1", AlertStatus::firing, kDrift));
  f.submit(alert("c1", AlertStatus::resolved, kDrift));
  f.idle();
  EXPECT_EQ(f.control.flag_calls().size(), 1u);
  const auto lines = f.audit();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["result"], "failed");
  EXPECT_NE(lines[0]["detail"].get<std::string>().find("no live segment"), std::string::npos);
}

TEST(ReactionEngine, AlertWithoutStreamHasNoTarget) {
  Fixture f;
  f.make(kFlagReaction);
  LabelSet labels = kDrift;
  labels.erase("stream");
  f.submit(alert("d1", AlertStatus::firing, labels));
  f.idle();
  EXPECT_TRUE(f.control.flag_calls().empty());
  EXPECT_EQ(f.results(), (std::vector<std::string>{"no_target"}));
}

TEST(ReactionEngine, SamplingBoostLastsTheConfiguredTimeAndIsUndone) {
  Fixture f;
  f.make(R"(    sample:
      type: sampling
      matchers: ['alertname = "MltapStreamDrift"']
      permille: 750
      duration: 15m
)");
  const auto before = std::chrono::system_clock::now();
  f.submit(alert("e1", AlertStatus::firing, kDrift));
  f.idle();
  auto calls = f.control.boost_calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].permille, 750u);
  const auto until = std::chrono::system_clock::time_point(std::chrono::nanoseconds(calls[0].until_unix_ns));
  EXPECT_GE(until, before + 15min);
  EXPECT_LE(until, std::chrono::system_clock::now() + 15min);
  f.submit(alert("e1", AlertStatus::resolved, kDrift));
  f.idle();
  calls = f.control.boost_calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1].permille, 0u);
  EXPECT_EQ(f.control.boost("fraud"), 0u);
}

std::string exec_reaction(const std::string& name, const std::string& args, const std::string& more = "",
                          const std::string& matchers = "['alertname = \"MltapStreamDrift\"']") {
  return "    " + name + ":\n      type: exec\n      matchers: " + matchers + "\n      path: " +
         std::string(REACTION_PROBE) + "\n      args: " + args + "\n" + more;
}

TEST(ReactionEngine, ExecGetsOnlyAllowListedLabelsSanitized) {
  Fixture f;
  const std::string out = f.dir.file("record.json");
  f.make(exec_reaction("notify", "[record, " + out + "]",
                       "      env_labels: [stream, note, absent]\n      env: ['TEAM=ml-platform']\n"));
  ::setenv("MLTAP_TEST_CANARY", "must-not-leak", 1);
  LabelSet labels = kDrift;
  labels["note"] = "$(touch /tmp/x); `id` | rm -rf / \n\"quoted\"";
  labels["secret"] = "s3cr3t";
  f.submit(alert("f00d", AlertStatus::firing, labels));
  f.idle();
  const auto doc = nlohmann::json::parse(mltap::testing::read_file(out));
  EXPECT_EQ(doc["argv"], nlohmann::json({REACTION_PROBE, "record", out}));
  const std::vector<std::string> want = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "LC_ALL=C",
      "MLTAP_REACTION=notify",
      "MLTAP_ALERT_STATUS=firing",
      "MLTAP_ALERT_FINGERPRINT=f00d",
      "MLTAP_LABEL_STREAM=fraud",
      "MLTAP_LABEL_NOTE=__touch /tmp/x__ _id_ _ rm -rf / __quoted_",
      "TEAM=ml-platform",
  };
  EXPECT_EQ(doc["env"], nlohmann::json(want));
  EXPECT_EQ(doc["cwd"], "/");
  const auto lines = f.audit();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["result"], "ok");
  EXPECT_EQ(lines[0]["exit_code"], 0);
  EXPECT_NE(lines[0]["output"].get<std::string>().find("recorded 3 args"), std::string::npos) << lines[0];
}

TEST(ReactionEngine, ExecTimeoutAndFailureAreAudited) {
  Fixture f;
  f.make(exec_reaction("hangs", "[hang]", "      timeout: 300ms\n      kill_grace: 100ms\n", "['stream = \"a\"']") +
         exec_reaction("fails", "[fail, '3']", "", "['stream = \"b\"']"));
  f.submit(alert("01", AlertStatus::firing, with(kDrift, "stream", "a")));
  f.submit(alert("02", AlertStatus::firing, with(kDrift, "stream", "b")));
  f.idle();
  auto lines = f.audit();
  ASSERT_EQ(lines.size(), 2u);
  std::sort(lines.begin(), lines.end(), [](const auto& x, const auto& y) { return x["reaction"] < y["reaction"]; });
  EXPECT_EQ(lines[0]["reaction"], "fails");
  EXPECT_EQ(lines[0]["result"], "failed");
  EXPECT_EQ(lines[0]["exit_code"], 3);
  EXPECT_NE(lines[0]["output"].get<std::string>().find("failing on purpose"), std::string::npos);
  EXPECT_EQ(lines[1]["reaction"], "hangs");
  EXPECT_EQ(lines[1]["result"], "timeout");
  EXPECT_GE(lines[1]["duration_ms"].get<double>(), 300.0);
  EXPECT_FALSE(mltap::testing::process_alive(lines[1]["pid"].get<int>()));
  EXPECT_EQ(f.count("hangs", ReactionResult::timeout), 1u);
  EXPECT_EQ(f.count("fails", ReactionResult::failed), 1u);
}

std::string script_reaction(const std::string& name, const std::string& path) {
  return "    " + name + ":\n      type: exec\n      matchers: ['alertname = \"MltapStreamDrift\"']\n      path: " +
         path + "\n      cooldown: 0s\n";
}

// A shell script (interpreter started by the kernel) runs through the descriptor opened at load.
TEST(ReactionEngine, ExecScriptRunsThroughTheDescriptorOpenedAtLoad) {
  Fixture f;
  const std::string prog = f.dir.file("react.sh");
  const std::string marker = f.dir.file("ran");
  mltap::testing::write_file(prog, "#!/bin/sh\necho original > " + marker + "\n", 0755);
  f.make(script_reaction("notify", prog));
  f.submit(alert("e1", AlertStatus::firing, kDrift));
  f.idle();
  EXPECT_EQ(mltap::testing::read_file(marker), "original\n");
  EXPECT_EQ(f.count("notify", ReactionResult::ok), 1u);
}

// Swapped after load (rename over it, the usual way to replace a file), or made writable: the
// run-time check refuses it, counts it as `refused`, audits why; the new file never runs.
TEST(ReactionEngine, ExecProgramReplacedAfterLoadIsRefused) {
  Fixture f;
  const std::string prog = f.dir.file("react.sh");
  const std::string marker = f.dir.file("ran");
  mltap::testing::write_file(prog, "#!/bin/sh\necho original >> " + marker + "\n", 0755);
  f.make(script_reaction("notify", prog));
  const std::string swap = f.dir.file("swap.sh");
  mltap::testing::write_file(swap, "#!/bin/sh\necho intruder >> " + marker + "\n", 0755);
  ASSERT_EQ(::rename(swap.c_str(), prog.c_str()), 0);
  f.submit(alert("e2", AlertStatus::firing, kDrift));
  f.idle();
  EXPECT_FALSE(std::filesystem::exists(marker));
  EXPECT_EQ(f.count("notify", ReactionResult::refused), 1u);
  EXPECT_EQ(f.count("notify", ReactionResult::ok), 0u);
  auto lines = f.audit();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["result"], "refused");
  EXPECT_NE(lines[0]["detail"].get<std::string>().find("was replaced since the configuration was loaded"),
            std::string::npos) << lines[0];

  // The file the path names at load, made world-writable afterwards: refused as well.
  Fixture g;
  const std::string prog2 = g.dir.file("react.sh");
  mltap::testing::write_file(prog2, "#!/bin/sh\necho original >> " + marker + "\n", 0755);
  g.make(script_reaction("notify", prog2));
  ASSERT_EQ(::chmod(prog2.c_str(), 0757), 0);
  g.submit(alert("e3", AlertStatus::firing, kDrift));
  g.idle();
  EXPECT_FALSE(std::filesystem::exists(marker));
  EXPECT_EQ(g.count("notify", ReactionResult::refused), 1u);
  lines = g.audit();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0]["detail"].get<std::string>().find("writable by group or others"), std::string::npos) << lines[0];
  // Put right again, it runs (the check is not a one-way latch).
  ASSERT_EQ(::chmod(prog2.c_str(), 0755), 0);
  g.submit(alert("e4", AlertStatus::firing, kDrift));
  g.idle();
  EXPECT_EQ(mltap::testing::read_file(marker), "original\n");
  EXPECT_EQ(g.count("notify", ReactionResult::ok), 1u);
}

// The folder above, given to another user after load: the run-time check refuses.
TEST(ReactionEngine, ExecFolderGivenAwayAfterLoadIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  Fixture f;
  const std::string sub = f.dir.file("bin");
  ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0);
  const std::string prog = sub + "/react.sh";
  const std::string marker = f.dir.file("ran");
  mltap::testing::write_file(prog, "#!/bin/sh\necho original >> " + marker + "\n", 0755);
  f.make(script_reaction("notify", prog));
  ASSERT_EQ(::chown(sub.c_str(), 65534, 65534), 0);
  f.submit(alert("e5", AlertStatus::firing, kDrift));
  f.idle();
  EXPECT_FALSE(std::filesystem::exists(marker));
  EXPECT_EQ(f.count("notify", ReactionResult::refused), 1u);
  const auto lines = f.audit();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0]["detail"].get<std::string>().find("folder '" + sub + "' is owned by uid 65534"),
            std::string::npos) << lines[0];
}

TEST(ReactionEngine, CooldownIsPerStream) {
  Fixture f;
  f.make(exec_reaction("notify", "[fail, '0']", "      cooldown: 1h\n"));
  f.submit(alert("01", AlertStatus::firing, with(kDrift, "stream", "a")));
  f.idle();
  f.submit(alert("02", AlertStatus::firing, with(kDrift, "stream", "a")));  // same stream: cooling down
  f.submit(alert("03", AlertStatus::firing, with(kDrift, "stream", "b")));  // other stream: runs
  f.idle();
  EXPECT_EQ(f.count("notify", ReactionResult::ok), 2u);
  EXPECT_EQ(f.count("notify", ReactionResult::cooldown), 1u);
  for (const auto& line : f.audit()) {
    if (line["result"] == "cooldown") {
      EXPECT_EQ(line["alert"]["fingerprint"], "02");
      EXPECT_NE(line["detail"].get<std::string>().find("s left"), std::string::npos);
    }
  }
}

TEST(ReactionEngine, BusyProgramSlotsDoNotUseTheCooldown) {
  Fixture f;
  f.make(exec_reaction("slow", "[hang]", "      timeout: 400ms\n      kill_grace: 0s\n      cooldown: 1h\n"),
         "  max_concurrent_exec: 1\n");
  f.submit(alert("01", AlertStatus::firing, with(kDrift, "stream", "a")));  // takes the only slot
  f.submit(alert("02", AlertStatus::firing, with(kDrift, "stream", "b")));  // busy
  f.idle();
  f.submit(alert("03", AlertStatus::firing, with(kDrift, "stream", "b")));  // runs: no cooldown used
  f.idle();
  EXPECT_EQ(f.count("slow", ReactionResult::busy), 1u);
  EXPECT_EQ(f.count("slow", ReactionResult::timeout), 2u);
  EXPECT_EQ(f.count("slow", ReactionResult::cooldown), 0u);
}

TEST(ReactionEngine, RateLimitCapsRunsAcrossStreams) {
  Fixture f;
  f.make(exec_reaction("notify", "[fail, '0']", "      cooldown: 0s\n      rate_limit: {max: 2, per: 1h}\n"));
  for (int i = 0; i < 5; ++i) f.submit(alert("0" + std::to_string(i), AlertStatus::firing, with(kDrift, "stream", "s" + std::to_string(i))));
  f.idle();
  EXPECT_EQ(f.count("notify", ReactionResult::ok), 2u);
  EXPECT_EQ(f.count("notify", ReactionResult::rate_limited), 3u);
  EXPECT_EQ(f.audit().size(), 5u);
}

TEST(ReactionEngine, SignalsTheStreamsRealProducer) {
  Fixture f;
  f.make(R"(    poke:
      type: signal
      matchers: ['alertname = "MltapStreamDrift"']
      signal: SIGUSR1
)");
  const std::string ready = f.dir.file("ready"), out = f.dir.file("out");
  std::vector<std::string> args = {REACTION_PROBE, "wait-signal", ready, out};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(::posix_spawn(&pid, REACTION_PROBE, nullptr, nullptr, argv.data(), environ), 0);
  ASSERT_TRUE(mltap::testing::wait_until([&] { return std::filesystem::exists(ready); }, 10s));
  const auto ticks = naming::process_start_ticks(static_cast<std::uint32_t>(pid), "/proc");
  ASSERT_TRUE(ticks);
  f.control.add_producer("fraud", {static_cast<std::uint32_t>(pid), *ticks});
  f.control.add_producer("fraud", {static_cast<std::uint32_t>(pid), *ticks + 5});  // a stale entry
  f.submit(alert("51", AlertStatus::firing, kDrift));
  f.idle();
  int status = 0;
  const bool exited = mltap::testing::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 10s);
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(exited);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(mltap::testing::read_file(out), "USR1\n");
  const auto lines = f.audit();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["result"], "ok");
  EXPECT_NE(lines[0]["detail"].get<std::string>().find("reused or gone"), std::string::npos) << lines[0];
}

TEST(ReactionEngine, SignalWithoutProducersHasNoTarget) {
  Fixture f;
  f.make("    poke:\n      type: signal\n      matchers: ['alertname = \"MltapStreamDrift\"']\n      signal: USR2\n");
  f.submit(alert("52", AlertStatus::firing, kDrift));
  f.idle();
  EXPECT_EQ(f.results(), (std::vector<std::string>{"no_target"}));
}

TEST(ReactionEngine, SnapshotWritesBundlesWithinLimits) {
  Fixture f;
  const std::string incidents = f.dir.file("incidents");
  int provider_calls = 0;
  SnapshotProviders providers;
  providers.detector_state = [&](const std::string& stream, const AlertEvent&) {
    ++provider_calls;
    return nlohmann::json{{"stream", stream}, {"window", 1000}};
  };
  providers.finding = [](const std::string&, const AlertEvent& a) {
    return nlohmann::json{{"id", 7}, {"fingerprint", a.fingerprint}};
  };
  providers.timeline = [](const std::string&, const AlertEvent&) -> nlohmann::json {
    throw std::runtime_error("correlator not running");
  };
  providers.retained = [](const std::string& stream, const AlertEvent&) {
    return nlohmann::json{{"stream", stream}, {"rows", {{1, "10", 0.5}}}};
  };
  for (std::uint64_t seq = 1; seq <= 3; ++seq) {
    RetainedRecord r;
    r.producer = {1234, 99};
    r.seq = seq;
    r.timestamp_ns = 1'700'000'000'000'000'000ull + seq;
    r.dtype = "float32";
    r.row_shape = {2};
    r.rows = 1;
    r.trace_ids = {seq * 10};
    r.payload = std::vector<std::uint8_t>(8, static_cast<std::uint8_t>(seq));
    f.control.add_record("fraud", r);
  }
  // A file of the user's in the directory must survive the cleanup of old bundles.
  std::filesystem::create_directories(incidents);
  mltap::testing::write_file(incidents + "/README", "mine\n");
  f.make("    bundle:\n      type: snapshot\n      matchers: ['alertname = \"MltapStreamDrift\"']\n      directory: " +
             incidents + "\n      max_bundles: 2\n      cooldown: 0s\n",
         "", providers);
  for (int i = 0; i < 3; ++i) {
    f.submit(alert("b" + std::to_string(i), AlertStatus::firing, kDrift));
    f.idle();
  }
  EXPECT_EQ(provider_calls, 3);
  std::vector<std::string> bundles;
  for (const auto& e : std::filesystem::directory_iterator(incidents)) bundles.push_back(e.path().filename().string());
  std::sort(bundles.begin(), bundles.end());
  ASSERT_EQ(bundles.size(), 3u) << "two bundles and README";
  EXPECT_EQ(bundles[2], "README");
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(is_bundle_name(bundles[static_cast<std::size_t>(i)])) << bundles[static_cast<std::size_t>(i)];
    EXPECT_FALSE(bundles[static_cast<std::size_t>(i)].starts_with(".tmp-"));
  }
  // The newest bundle belongs to the last alert, and holds everything.
  const std::string newest = incidents + "/" + bundles[1];
  const auto manifest = nlohmann::json::parse(mltap::testing::read_file(newest + "/manifest.json"));
  EXPECT_EQ(manifest["format"], "mltap-incident/1");
  EXPECT_EQ(manifest["alert"]["fingerprint"], "b2");
  EXPECT_EQ(manifest["stream"], "fraud");
  EXPECT_EQ(manifest["records"], 3);
  ASSERT_EQ(manifest["errors"].size(), 1u);
  EXPECT_EQ(manifest["errors"][0]["file"], "timeline.json");
  const auto index = mltap::testing::read_json_lines(newest + "/records.jsonl");
  ASSERT_EQ(index.size(), 3u);
  EXPECT_EQ(index[2]["seq"], 3);
  EXPECT_EQ(index[2]["offset"], 16);
  EXPECT_EQ(index[2]["trace_ids"], nlohmann::json({30}));
  const std::string bin = mltap::testing::read_file(newest + "/records.bin");
  ASSERT_EQ(bin.size(), 24u);
  EXPECT_EQ(bin[16], 3);
  EXPECT_EQ(nlohmann::json::parse(mltap::testing::read_file(newest + "/finding.json"))["fingerprint"], "b2");
  EXPECT_TRUE(std::filesystem::exists(newest + "/detector_state.json"));
  EXPECT_FALSE(std::filesystem::exists(newest + "/timeline.json"));
  EXPECT_EQ(nlohmann::json::parse(mltap::testing::read_file(newest + "/retained.json"))["rows"][0][1], "10");
  const auto lines = f.audit();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[2]["detail"].get<std::string>().find("1 old bundles removed"), std::string::npos) << lines[2];
}

TEST(ReactionEngine, RequestLabelSelectsNamedReactions) {
  Fixture f;
  f.make(kFlagReaction + R"(    sample:
      type: sampling
      matchers: ['alertname = "MltapStreamDrift"']
)");
  f.submit(alert("r1", AlertStatus::firing, with(kDrift, "mltap_reaction", "sample")));
  f.idle();
  EXPECT_TRUE(f.control.flag_calls().empty());
  EXPECT_EQ(f.control.boost_calls().size(), 1u);
  const auto unknown = f.engine->unknown_requested(alert("r2", AlertStatus::firing,
                                                         with(kDrift, "mltap_reaction", "sample, zzz,fallback")));
  EXPECT_EQ(unknown, (std::vector<std::string>{"zzz"}));
}

TEST(ReactionEngine, QueueIsBoundedAndNeverBlocks) {
  mltap::testing::TempDir dir;
  RecordingControlPlane control;
  auto cfg = config_from("reactions:\n  queue_capacity: 2\n  actions:\n" + kFlagReaction);
  ReactionEngine engine(cfg, control);  // not started: nothing drains the queue
  EXPECT_EQ(engine.submit(alert("q1", AlertStatus::firing, kDrift)), ReactionEngine::Submit::accepted);
  EXPECT_EQ(engine.submit(alert("q2", AlertStatus::firing, with(kDrift, "stream", "s2"))), ReactionEngine::Submit::accepted);
  EXPECT_EQ(engine.submit(alert("q3", AlertStatus::firing, with(kDrift, "stream", "s3"))), ReactionEngine::Submit::queue_full);
  EXPECT_EQ(engine.queue_rejections(), 1u);
  engine.start();
  ASSERT_TRUE(engine.wait_idle(10s));
  EXPECT_EQ(control.flag_calls().size(), 2u);
  engine.stop();
  EXPECT_EQ(engine.submit(alert("q4", AlertStatus::firing, kDrift)), ReactionEngine::Submit::stopped);
}

TEST(ReactionEngine, StopUndoesActiveReactions) {
  Fixture f;
  f.make(kFlagReaction);
  f.submit(alert("s1", AlertStatus::firing, kDrift));
  f.idle();
  ASSERT_EQ(f.control.flag("fraud", "use_fallback"), 1u);
  f.engine->stop();
  EXPECT_EQ(f.control.flag("fraud", "use_fallback"), 0u);
  const auto lines = f.audit();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["result"], "undone");
  EXPECT_NE(lines[1]["detail"].get<std::string>().find("mltapd stopping"), std::string::npos);
}

TEST(AuditLog, RotatesAtItsSizeCap) {
  mltap::testing::TempDir dir;
  const std::string path = dir.file("audit.jsonl");
  {
    AuditLog log(path, 4096, 2);
    for (int i = 0; i < 200; ++i) log.append({{"reaction", "r"}, {"i", i}, {"pad", std::string(40, 'x')}});
    EXPECT_GE(log.rotations(), 2u);
    EXPECT_EQ(log.write_errors(), 0u);
  }
  EXPECT_LE(std::filesystem::file_size(path), 4096u);
  EXPECT_TRUE(std::filesystem::exists(path + ".1"));
  EXPECT_TRUE(std::filesystem::exists(path + ".2"));
  EXPECT_FALSE(std::filesystem::exists(path + ".3"));
  // Every file holds whole, valid lines; the newest record is last in the current file.
  for (const auto& p : {path + ".2", path + ".1", path}) {
    EXPECT_LE(std::filesystem::file_size(p), 4096u);
    EXPECT_FALSE(mltap::testing::read_json_lines(p).empty());
  }
  EXPECT_EQ(mltap::testing::read_json_lines(path).back()["i"], 199);
}

TEST(AuditLog, RefusesAnUnwritablePath) {
  EXPECT_THROW(AuditLog("/nonexistent-dir/audit.jsonl", 4096, 1), std::runtime_error);
}

}  // namespace
}  // namespace mltap::reactions
