// GET /api/v1/events on mltapd's real HTTP server (agent/api) on loopback, and `mltap explain` against it.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <httplib.h>

#include <sstream>
#include <thread>

#include "agent/api/event_json.hpp"
#include "agent/api/events_api.hpp"
#include "agent/api/http_server.hpp"
#include "agent/cli/explain.hpp"
#include "test_events.hpp"

namespace mltap::correlator::test {

using core::EventKind;
using core::FileOp;
using core::ProcessRef;
using core::SystemEvent;

using api::EventsApi;
using api::register_events_routes;
using cli::ExplainArgs;
using cli::run_explain;

namespace {

using nlohmann::json;

class EventsApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ProcessRef p = proc(1000, 5000);
    SystemEvent e = tracked(EventKind::exit, kT0 - 2 * kMin, p, p);
    e.exit_code = 0;  // a restart after the model was swapped
    correlator_.add_event(e);
    SystemEvent swap = host(EventKind::file_change, kT0 - 4 * kMin, proc(4242, 9000, "mv"));
    swap.file_op = FileOp::renamed_onto;
    swap.path = "/srv/models/model.onnx";
    correlator_.add_event(swap);
    EventsApi api;
    api.correlator = &correlator_;
    api.findings_of_stream = [](const std::string& s) -> std::optional<std::vector<core::Finding>> {
      if (s == "scores") return std::vector<core::Finding>{finding(core::FindingKind::drift)};
      if (s == "quiet stream/ü") return std::vector<core::Finding>{};
      return std::nullopt;
    };
    api.producers_of_stream = [](const std::string& s) {
      return s == "scores" ? std::vector<core::ProducerId>{{1000, 5000}} : std::vector<core::ProducerId>{};
    };
    api.now_unix_ns = [] { return kT0 + kMin; };
    register_events_routes(server_, api);
    std::string error;
    ASSERT_TRUE(server_.start(error)) << error;
    port_ = server_.bound_port();
    ASSERT_GT(port_, 0);
  }
  void TearDown() override { server_.stop(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  Correlator correlator_;
  api::HttpServer server_{api::ListenAddress{"127.0.0.1", 0}};
  int port_ = 0;
};

TEST_F(EventsApiTest, ServesTimelineAndRankedRelatedEvents) {
  httplib::Client cl(url());
  auto res = cl.Get("/api/v1/events?stream=scores&since=2h");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const json j = json::parse(res->body);
  EXPECT_EQ(j["stream"], "scores");
  EXPECT_EQ(j["since_unix_ns"].get<std::uint64_t>(), kT0 + kMin - 120 * kMin);
  ASSERT_EQ(j["events"].size(), 2u);
  EXPECT_EQ(j["events"][0]["kind"], "file_change") << "oldest first";
  ASSERT_EQ(j["findings"].size(), 1u);
  const auto& rel = j["findings"][0]["related"];
  ASSERT_EQ(rel.size(), 2u);
  EXPECT_EQ(rel[0]["kind"], "file_change");
  EXPECT_EQ(rel[0]["relation"], "host");
  EXPECT_EQ(rel[1]["kind"], "exit");
  EXPECT_EQ(rel[1]["relation"], "producer");
  EXPECT_GT(rel[0]["score"].get<double>(), rel[1]["score"].get<double>());
}

TEST_F(EventsApiTest, RejectsBadRequests) {
  httplib::Client cl(url());
  auto r1 = cl.Get("/api/v1/events");
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->status, 400);
  EXPECT_NE(r1->body.find("stream"), std::string::npos);
  auto r2 = cl.Get("/api/v1/events?stream=nope");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->status, 404);
  auto r3 = cl.Get("/api/v1/events?stream=scores&since=forever");
  ASSERT_TRUE(r3);
  EXPECT_EQ(r3->status, 400);
  auto r4 = cl.Get("/api/v1/events?stream=scores&since=30d");
  ASSERT_TRUE(r4);
  EXPECT_EQ(r4->status, 400);
  auto r5 = cl.Get(("/api/v1/events?stream=" + std::string(300, 'a')).c_str());
  ASSERT_TRUE(r5);
  EXPECT_EQ(r5->status, 400);
  auto r6 = cl.Get("/api/v1/events?stream=a%01b");
  ASSERT_TRUE(r6);
  EXPECT_EQ(r6->status, 400);
}

TEST_F(EventsApiTest, ExplainPrintsTheTimeline) {
  ExplainArgs args;
  args.agent_url = url();
  args.stream = "scores";
  std::ostringstream out, err;
  ASSERT_EQ(run_explain(args, out, err), 0) << err.str();
  const std::string text = out.str();
  EXPECT_NE(text.find("1. "), std::string::npos);
  const auto first = text.find("       1. ");
  ASSERT_NE(first, std::string::npos) << text;
  EXPECT_NE(text.substr(first, 200).find("model file /srv/models/model.onnx replaced"), std::string::npos) << text;
  EXPECT_NE(text.find("python3 (pid 1000) exited with code 0"), std::string::npos) << text;
  EXPECT_LT(text.find("model file"), text.find("exited with code 0")) << text;
}

TEST_F(EventsApiTest, ExplainEncodesStreamNamesAndPrintsJson) {
  ExplainArgs args;
  args.agent_url = url();
  args.stream = "quiet stream/ü";
  args.json = true;
  std::ostringstream out, err;
  ASSERT_EQ(run_explain(args, out, err), 0) << err.str();
  EXPECT_EQ(json::parse(out.str())["stream"], "quiet stream/ü");
}

TEST_F(EventsApiTest, ExplainReportsErrorsClearly) {
  std::ostringstream out, err;
  ExplainArgs args;
  args.agent_url = url();
  args.stream = "nope";
  EXPECT_EQ(run_explain(args, out, err), 1);
  EXPECT_NE(err.str().find("404"), std::string::npos) << err.str();
  err.str("");
  args.stream = "scores";
  args.since = "-5m";
  EXPECT_EQ(run_explain(args, out, err), 2);
  err.str("");
  args.since = "1h";
  args.agent_url = "http://127.0.0.1:1";  // nothing listens there
  EXPECT_EQ(run_explain(args, out, err), 1);
  EXPECT_NE(err.str().find("mltapd"), std::string::npos) << err.str();
  err.str("");
  args.stream = "";
  EXPECT_EQ(run_explain(args, out, err), 2);
}

}  // namespace
}  // namespace mltap::correlator::test
