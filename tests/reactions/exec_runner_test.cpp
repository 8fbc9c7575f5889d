// ExecRunner with real processes: argv and environment passed exactly, no shell, output captured
// and bounded, timeouts kill the whole process group, failures and spawn errors reported.
#include <signal.h>

#include <future>

#include <gtest/gtest.h>

#include "agent/reactions/exec_runner.hpp"
#include "support/test_util.hpp"

namespace mltap::reactions {
namespace {

using namespace std::chrono_literals;

ExecResult run(ExecRunner& runner, ExecRequest req) {
  std::promise<ExecResult> p;
  auto f = p.get_future();
  std::string error;
  const auto started = runner.start(std::move(req), [&p](ExecResult r) { p.set_value(std::move(r)); }, &error);
  if (started != ExecRunner::Start::started) {
    ExecResult r;
    r.error = error;
    return r;
  }
  if (f.wait_for(30s) != std::future_status::ready) {
    ADD_FAILURE() << "program did not finish";
    return {};
  }
  return f.get();
}

ExecRequest probe(std::vector<std::string> args) {
  ExecRequest r;
  r.path = REACTION_PROBE;
  r.argv = {REACTION_PROBE};
  r.argv.insert(r.argv.end(), args.begin(), args.end());
  r.env = {"PATH=/usr/bin:/bin", "ONLY=this"};
  r.timeout = 10s;
  return r;
}

TEST(ExecRunner, PassesArgvAndEnvironmentExactly) {
  testing::TempDir dir;
  ExecRunner runner(2);
  const std::string out = dir.file("record.json");
  // Shell metacharacters stay literal: there is no shell.
  ExecRequest req = probe({"record", out, "$(touch " + dir.file("pwned") + ")", "a b;c|d"});
  req.working_dir = dir.path().string();
  ::setenv("MLTAP_TEST_CANARY", "leaked", 1);
  const ExecResult r = run(runner, req);
  ASSERT_TRUE(r.ok()) << exec_outcome_name(r.outcome) << " " << r.error << " " << r.output;
  const auto doc = nlohmann::json::parse(testing::read_file(out));
  EXPECT_EQ(doc["argv"], nlohmann::json(req.argv));
  EXPECT_EQ(doc["env"], nlohmann::json({"PATH=/usr/bin:/bin", "ONLY=this"}));
  EXPECT_EQ(doc["cwd"], dir.path().string());
  EXPECT_FALSE(std::filesystem::exists(dir.file("pwned")));
  EXPECT_NE(r.output.find("recorded 5 args"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("note on stderr"), std::string::npos) << r.output;
  EXPECT_FALSE(r.output_truncated);
  EXPECT_GT(r.pid, 0);
}

TEST(ExecRunner, ReportsExitCode) {
  ExecRunner runner(1);
  const ExecResult r = run(runner, probe({"fail", "7"}));
  EXPECT_EQ(r.outcome, ExecOutcome::exited);
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.output.find("failing on purpose"), std::string::npos);
}

TEST(ExecRunner, TimeoutKillsTheProgram) {
  ExecRunner runner(1);
  ExecRequest req = probe({"hang"});
  req.timeout = 300ms;
  req.kill_grace = 200ms;
  const auto t0 = std::chrono::steady_clock::now();
  const ExecResult r = run(runner, req);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.outcome, ExecOutcome::timed_out);
  EXPECT_EQ(r.term_signal, SIGTERM);
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 10s);
  EXPECT_NE(r.output.find("hanging"), std::string::npos);
  EXPECT_FALSE(testing::process_alive(r.pid));
}

TEST(ExecRunner, TimeoutKillsTheWholeGroupEvenIfSigtermIsIgnored) {
  testing::TempDir dir;
  ExecRunner runner(1);
  const std::string pidfile = dir.file("pids");
  ExecRequest req = probe({"hang-ignore-term", pidfile});
  req.timeout = 500ms;
  req.kill_grace = 300ms;
  const ExecResult r = run(runner, req);
  EXPECT_EQ(r.outcome, ExecOutcome::timed_out);
  EXPECT_EQ(r.term_signal, SIGKILL);  // SIGTERM was ignored
  pid_t self = 0, child = 0;
  std::istringstream(testing::read_file(pidfile)) >> self >> child;
  ASSERT_GT(child, 0);
  EXPECT_EQ(self, r.pid);
  EXPECT_TRUE(testing::wait_until([&] { return !testing::process_alive(child); }, 5s))
      << "grandchild " << child << " survived";
}

TEST(ExecRunner, BoundsCapturedOutput) {
  ExecRunner runner(1);
  ExecRequest req = probe({"flood", "1000000"});
  req.max_output_bytes = 1000;
  const ExecResult r = run(runner, req);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.output.size(), 1000u);
  EXPECT_EQ(r.output_bytes, 1000000u);  // read to the end, so the program never blocked
  EXPECT_TRUE(r.output_truncated);
}

TEST(ExecRunner, RefusesBeyondConcurrencyLimit) {
  ExecRunner runner(1);
  ExecRequest hang = probe({"hang"});
  hang.timeout = 500ms;
  hang.kill_grace = 0ms;
  std::promise<ExecResult> p;
  std::string error;
  ASSERT_EQ(runner.start(hang, [&](ExecResult r) { p.set_value(std::move(r)); }, &error), ExecRunner::Start::started);
  EXPECT_EQ(runner.running(), 1u);
  EXPECT_EQ(runner.start(probe({"fail", "0"}), [](ExecResult) { FAIL() << "must not run"; }, &error),
            ExecRunner::Start::busy);
  EXPECT_NE(error.find("max_concurrent_exec"), std::string::npos);
  EXPECT_EQ(p.get_future().get().outcome, ExecOutcome::timed_out);
  EXPECT_TRUE(runner.wait_idle(5s));
}

TEST(ExecRunner, ReportsSpawnFailure) {
  ExecRunner runner(1);
  ExecRequest req = probe({});
  req.path = "/nonexistent/program";
  std::string error;
  EXPECT_EQ(runner.start(req, [](ExecResult) { FAIL() << "must not be called"; }, &error),
            ExecRunner::Start::spawn_failed);
  EXPECT_NE(error.find("/nonexistent/program"), std::string::npos) << error;
}

TEST(ExecRunner, DestructorKillsRunningPrograms) {
  std::promise<ExecResult> p;
  pid_t pid = 0;
  {
    ExecRunner runner(1);
    ExecRequest req = probe({"hang"});
    req.timeout = std::chrono::hours(1);
    std::string error;
    ASSERT_EQ(runner.start(req, [&](ExecResult r) { p.set_value(std::move(r)); }, &error), ExecRunner::Start::started);
  }
  const ExecResult r = p.get_future().get();
  pid = r.pid;
  EXPECT_EQ(r.outcome, ExecOutcome::shutdown);
  EXPECT_FALSE(testing::process_alive(pid));
}

}  // namespace
}  // namespace mltap::reactions
