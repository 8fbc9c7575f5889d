// The `reactions:` config section: what it accepts and how it refuses (file:line:col).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "agent/reactions/reaction_config.hpp"
#include "core/config_reader.hpp"
#include "support/test_util.hpp"

namespace mltap::reactions {
namespace {

ReactionsConfig parse(const std::string& yaml) {
  auto root = core::load_text(yaml, "test.yaml");
  core::ConfigSection top(root, "test.yaml", "");
  return parse_reactions_config(top.child("reactions"));
}

std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const core::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ReactionConfig, ParsesEveryType) {
  testing::TempDir dir;
  const auto cfg = parse(R"(
reactions:
  queue_capacity: 16
  audit_log: /var/log/mltap/reactions.jsonl
  audit_log_max_bytes: 1MiB
  audit_log_keep: 2
  actions:
    run:
      type: exec
      matchers: ['alertname = "MltapStreamDrift"', 'stream =~ "fraud-.*"']
      path: )" + std::string(REACTION_PROBE) + R"(
      args: [record, /tmp/out]
      env_labels: [stream, severity]
      env: ["TEAM=ml"]
      timeout: 5s
      cooldown: 30s
      rate_limit: {max: 3, per: 10m}
    hup:
      type: signal
      matchers: ['kind = "drift"']
      signal: SIGHUP
    fallback:
      type: producer-flag
      matchers: ['severity = "critical"']
      flag: use_fallback
      value: 2
    sample:
      type: sampling
      matchers: ['kind != "staleness"']
      permille: 500
      duration: 15m
    bundle:
      type: snapshot
      matchers: ['alertname =~ "Mltap.*"']
      directory: )" + dir.path().string() + R"(
      max_bundles: 3
)");
  ASSERT_EQ(cfg.actions.size(), 5u);
  EXPECT_EQ(cfg.queue_capacity, 16u);
  EXPECT_EQ(cfg.audit_log_max_bytes, 1u << 20);
  const auto& run = cfg.actions[0];
  EXPECT_EQ(run.type(), ReactionType::exec);
  EXPECT_EQ(run.cooldown, std::chrono::seconds(30));
  EXPECT_EQ(run.rate_limit.max, 3u);
  EXPECT_EQ(run.rate_limit.per, std::chrono::minutes(10));
  const auto& exec = std::get<ExecAction>(run.action);
  EXPECT_EQ(exec.args, (std::vector<std::string>{"record", "/tmp/out"}));
  EXPECT_EQ(exec.timeout, std::chrono::seconds(5));
  EXPECT_TRUE(run.matches({{"alertname", "MltapStreamDrift"}, {"stream", "fraud-eu"}}));
  EXPECT_FALSE(run.matches({{"alertname", "MltapStreamDrift"}, {"stream", "ads"}}));
  EXPECT_FALSE(run.matches({{"alertname", "MltapStreamDrift"}, {"stream", "xfraud-eu"}}));  // anchored
  EXPECT_EQ(std::get<SignalAction>(cfg.actions[1].action).signal, SIGHUP);
  EXPECT_EQ(std::get<FlagAction>(cfg.actions[2].action).value, 2u);
  EXPECT_TRUE(cfg.actions[2].reversible());
  EXPECT_EQ(std::get<SamplingAction>(cfg.actions[3].action).permille, 500u);
  EXPECT_TRUE(cfg.actions[3].matches({{"kind", "drift"}}));
  EXPECT_FALSE(cfg.actions[3].matches({{"kind", "staleness"}}));
  EXPECT_EQ(std::get<SnapshotAction>(cfg.actions[4].action).max_bundles, 3u);
  EXPECT_NE(cfg.find("bundle"), nullptr);
  EXPECT_EQ(cfg.find("nope"), nullptr);
}

TEST(ReactionConfig, AbsentSectionIsEmpty) {
  const auto cfg = parse("agent: {}\n");
  EXPECT_TRUE(cfg.actions.empty());
  EXPECT_TRUE(cfg.enabled);
}

TEST(ReactionConfig, UnknownKeyNamesLineAndColumn) {
  const std::string e = error_of(R"(reactions:
  actions:
    fallback:
      type: producer-flag
      matchers: ['severity = "critical"']
      flag: use_fallback
      path: /bin/true
)");
  EXPECT_NE(e.find("test.yaml:7:7"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'path'"), std::string::npos) << e;
}

TEST(ReactionConfig, RefusesBadValues) {
  // Each case: YAML body of one reaction, and a piece of the expected message.
  const std::pair<std::string, std::string> cases[] = {
      {"type: exec\n      matchers: ['a = \"b\"']\n      path: bin/true", "absolute path"},
      {"type: exec\n      matchers: ['a = \"b\"']\n      path: /nonexistent/prog", "does not exist"},
      {"type: exec\n      matchers: ['a = \"b\"']\n      path: /etc", "not a regular file"},
      {"type: exec\n      matchers: ['a = \"b\"']\n      path: /bin/true\n      env: ['MLTAP_X=1']", "set by mltapd"},
      {"type: exec\n      matchers: ['a = \"b\"']\n      path: /bin/true\n      env_labels: ['bad-name']", "not a label name"},
      {"type: signal\n      matchers: ['a = \"b\"']\n      signal: SIGSEGV", "is not one of"},
      {"type: producer-flag\n      matchers: ['a = \"b\"']\n      flag: 'has space'", "must match"},
      {"type: producer-flag\n      matchers: ['a = \"b\"']", "needs 'flag'"},
      {"type: sampling\n      matchers: ['a = \"b\"']\n      permille: 2000", "between 1 and 1000"},
      {"type: snapshot\n      matchers: ['a = \"b\"']\n      directory: /tmp/x\n      max_total_bytes: 2MiB",
       "must hold one bundle"},
      {"type: producer-flag\n      flag: f", "at least one matcher"},
      {"type: producer-flag\n      matchers: ['a ~ b']\n      flag: f", "expected =, !=, =~ or !~"},
      {"type: producer-flag\n      matchers: ['a =~ \"(\"']\n      flag: f", "invalid regular expression"},
      {"type: teleport\n      matchers: ['a = \"b\"']", "must be one of"},
      {"matchers: ['a = \"b\"']", "needs 'type'"},
      {"type: producer-flag\n      matchers: ['a = \"b\"']\n      flag: f\n      rate_limit: {max: 1, every: 1m}",
       "unknown key 'every'"},
  };
  for (const auto& [body, want] : cases) {
    const std::string e = error_of("reactions:\n  actions:\n    r1:\n      " + body + "\n");
    EXPECT_NE(e.find(want), std::string::npos) << "config:\n" << body << "\nerror: " << e;
    EXPECT_NE(e.find("test.yaml"), std::string::npos) << e;
  }
}

TEST(ReactionConfig, RefusesProgramsOthersCanWrite) {
  testing::TempDir dir;
  const std::string prog = dir.file("prog");
  testing::write_file(prog, "#!/bin/sh\nexit 0\n", 0777);
  ::chmod(prog.c_str(), 0777);  // umask-proof
  const std::string e = error_of("reactions:\n  actions:\n    r1:\n      type: exec\n      matchers: ['a = \"b\"']\n"
                                 "      path: " + prog + "\n");
  EXPECT_NE(e.find("writable by group or others"), std::string::npos) << e;
  ::chmod(prog.c_str(), 0755);
  EXPECT_EQ(error_of("reactions:\n  actions:\n    r1:\n      type: exec\n      matchers: ['a = \"b\"']\n"
                     "      path: " + prog + "\n"),
            "");
}

std::string exec_yaml(const std::string& prog) {
  return "reactions:\n  actions:\n    r1:\n      type: exec\n      matchers: ['a = \"b\"']\n      path: " + prog + "\n";
}

// The uid a file is given to show "owned by another user": nobody (always present on Debian).
constexpr uid_t kOtherUid = 65534;

TEST(ReactionConfig, RefusesProgramsInAFolderOthersCanWrite) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  testing::TempDir dir;
  const std::string open_dir = dir.file("open");
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);  // world-writable, no sticky bit
  const std::string prog = open_dir + "/prog";
  testing::write_file(prog, "#!/bin/sh\nexit 0\n", 0755);
  std::string e = error_of(exec_yaml(prog));
  EXPECT_NE(e.find("folder '" + open_dir + "' is writable by group or others"), std::string::npos) << e;
  EXPECT_NE(e.find("mode 0777"), std::string::npos) << e;
  EXPECT_NE(e.find("test.yaml:6:"), std::string::npos) << e;  // file:line:col of `path`
  // Group-writable is refused too.
  ASSERT_EQ(::chmod(open_dir.c_str(), 0775), 0);
  e = error_of(exec_yaml(prog));
  EXPECT_NE(e.find("mode 0775"), std::string::npos) << e;
  // Once the folder is closed, the same program is accepted.
  ASSERT_EQ(::chmod(open_dir.c_str(), 0755), 0);
  EXPECT_EQ(error_of(exec_yaml(prog)), "");
}

TEST(ReactionConfig, RefusesProgramsOwnedByAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  testing::TempDir dir;
  const std::string prog = dir.file("prog");
  testing::write_file(prog, "#!/bin/sh\nexit 0\n", 0755);
  ASSERT_EQ(::chown(prog.c_str(), kOtherUid, kOtherUid), 0);
  std::string e = error_of(exec_yaml(prog));
  EXPECT_NE(e.find("program '" + prog + "' is owned by uid 65534 (mode 0755)"), std::string::npos) << e;
  // A folder above it owned by another user: that user could swap the program.
  ASSERT_EQ(::chown(prog.c_str(), 0, 0), 0);
  const std::string theirs = dir.file("theirs");
  ASSERT_EQ(::mkdir(theirs.c_str(), 0755), 0);
  const std::string inner = theirs + "/prog";
  testing::write_file(inner, "#!/bin/sh\nexit 0\n", 0755);
  ASSERT_EQ(::chown(theirs.c_str(), kOtherUid, kOtherUid), 0);
  e = error_of(exec_yaml(inner));
  EXPECT_NE(e.find("folder '" + theirs + "' is owned by uid 65534"), std::string::npos) << e;
  // A symbolic link is followed, and where it leads is checked: a root-owned link to another
  // user's program is refused with both names.
  const std::string link = dir.file("link");
  ASSERT_EQ(::symlink(inner.c_str(), link.c_str()), 0);
  e = error_of(exec_yaml(link));
  EXPECT_NE(e.find("folder '" + theirs + "' is owned by uid 65534"), std::string::npos) << e;
  // The sticky /tmp (mkdtemp's parent) is not an objection: others cannot replace root's entries.
  EXPECT_EQ(error_of(exec_yaml(prog)), "");
}

TEST(LabelMatcher, ParsesQuotedAndBareValues) {
  std::string error;
  auto m = LabelMatcher::parse(R"(stream = "a \"quoted\" \\ value")", &error);
  ASSERT_TRUE(m) << error;
  EXPECT_EQ(m->value(), R"(a "quoted" \ value)");
  EXPECT_TRUE(m->matches({{"stream", R"(a "quoted" \ value)"}}));
  auto bare = LabelMatcher::parse("severity=critical", &error);
  ASSERT_TRUE(bare);
  EXPECT_TRUE(bare->matches({{"severity", "critical"}}));
  auto missing = LabelMatcher::parse("team = \"\"", &error);
  ASSERT_TRUE(missing);
  EXPECT_TRUE(missing->matches({}));  // a missing label is ""
  auto nre = LabelMatcher::parse("stream !~ \"test-.*\"", &error);
  ASSERT_TRUE(nre);
  EXPECT_FALSE(nre->matches({{"stream", "test-1"}}));
  EXPECT_TRUE(nre->matches({{"stream", "prod"}}));
  EXPECT_FALSE(LabelMatcher::parse("1abc = x", &error));
  EXPECT_FALSE(LabelMatcher::parse("a = \"unterminated", &error));
}

}  // namespace
}  // namespace mltap::reactions
