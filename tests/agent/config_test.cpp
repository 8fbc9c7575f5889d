// Configuration: strict parsing with file:line:column errors, and the documented default file
// (packaging/mltapd.yaml) equal to the embedded defaults.
#include <gtest/gtest.h>

#include "agent/mltapd/agent_config.hpp"
#include "core/config_reader.hpp"

namespace mltap::test {
namespace {

using core::ConfigError;

using namespace std::chrono_literals;

TEST(ConfigReader, DurationsAndSizes) {
  EXPECT_EQ(core::parse_duration("250ms"), 250ms);
  EXPECT_EQ(core::parse_duration("5s"), 5s);
  EXPECT_EQ(core::parse_duration("2m"), 120s);
  EXPECT_EQ(core::parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(core::parse_duration("3"), 3s);
  EXPECT_FALSE(core::parse_duration("-1s"));
  EXPECT_FALSE(core::parse_duration("5 parsecs"));
  EXPECT_FALSE(core::parse_duration("1e9s"));
  EXPECT_FALSE(core::parse_duration(""));
  EXPECT_EQ(core::parse_bytes("4MiB"), 4u << 20);
  EXPECT_EQ(core::parse_bytes("64KiB"), 65536u);
  EXPECT_EQ(core::parse_bytes("4096"), 4096u);
  EXPECT_FALSE(core::parse_bytes("1.5B"));
  EXPECT_FALSE(core::parse_bytes("4 MB2"));
}

ConfigError error_of(const std::string& yaml) {
  try {
    mltapd::parse_agent_config_text(yaml, "test.yaml");
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for:\n" << yaml;
  return ConfigError("", 0, 0, "");
}

TEST(AgentConfig, TrustKeys) {
  const auto c = mltapd::parse_agent_config_text(
      "ingest:\n  stream_owners: {\"fraud/*\": [1000, 1001], exact/name: [0]}\n"
      "  artifact_dirs: [/srv/models]\n  verify_producers: true\n",
      "test.yaml");
  ASSERT_EQ(c.ingest.stream_owners.size(), 2u);
  EXPECT_EQ(c.ingest.stream_owners[0].first, "fraud/*");
  EXPECT_EQ(c.ingest.stream_owners[0].second, (std::vector<std::uint32_t>{1000, 1001}));
  EXPECT_EQ(c.ingest.stream_owners[1].second, (std::vector<std::uint32_t>{0}));
  EXPECT_EQ(c.ingest.artifact_dirs, std::vector<std::string>{"/srv/models"});
  EXPECT_TRUE(c.ingest.verify_producers);
  EXPECT_EQ(mltapd::parse_agent_config_text("", "t.yaml").ingest.artifact_dirs,
            (std::vector<std::string>{"/srv", "/opt", "/var/lib", "/home"}));
  EXPECT_TRUE(mltapd::parse_agent_config_text("ingest: {artifact_dirs: []}\n", "t.yaml").ingest.artifact_dirs.empty());
  EXPECT_TRUE(mltapd::parse_agent_config_text("", "t.yaml").ingest.verify_producers);

  auto e = error_of("ingest:\n  stream_owners:\n    fraud/*: [1000, alice]\n");
  EXPECT_STREQ(e.what(), "test.yaml:3:21: 'ingest.stream_owners.fraud/*': every item must be an "
                         "integer between 0 and 4294967294") << e.what();
  e = error_of("ingest:\n  stream_owners:\n    'bad name!': [1]\n");
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.column(), 5);
  EXPECT_NE(std::string(e.what()).find("not a stream name pattern"), std::string::npos) << e.what();
  e = error_of("ingest:\n  stream_owners:\n    fraud/*: 1000\n");
  EXPECT_NE(std::string(e.what()).find("test.yaml:3:14: 'ingest.stream_owners.fraud/*': expected a list"),
            std::string::npos) << e.what();
  e = error_of("ingest:\n  stream_owners: [1000]\n");
  EXPECT_NE(std::string(e.what()).find("test.yaml:2:18"), std::string::npos) << e.what();
  e = error_of("ingest:\n  artifact_dirs: [models]\n");
  EXPECT_NE(std::string(e.what()).find("'models' is not an absolute path"), std::string::npos) << e.what();
  e = error_of("ingest:\n  artifact_dirs: [/srv/../etc]\n");
  EXPECT_NE(std::string(e.what()).find("without '..'"), std::string::npos) << e.what();
}

TEST(AgentConfig, ErrorsNameFileLineAndColumn) {
  auto e = error_of("agent:\n  listen: 127.0.0.1:9645\n  colour: blue\n");
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.column(), 3);
  EXPECT_STREQ(e.what(), "test.yaml:3:3: unknown key 'colour' in 'agent'");
  e = error_of("ingest:\n  scan_interval: fast\n");
  EXPECT_EQ(e.line(), 2);
  EXPECT_NE(std::string(e.what()).find("ingest.scan_interval"), std::string::npos);
  e = error_of("ingest:\n  max_streams: 0\n");
  EXPECT_NE(std::string(e.what()).find("between 1 and"), std::string::npos);
  e = error_of("ingest:\n  namespace: Has Space\n");
  EXPECT_NE(std::string(e.what()).find("namespace"), std::string::npos);
  e = error_of("agent:\n  listen: nowhere\n");
  EXPECT_NE(std::string(e.what()).find("host:port"), std::string::npos);
  e = error_of("agent: [1, 2]\n");
  EXPECT_NE(std::string(e.what()).find("mapping"), std::string::npos);
  e = error_of("surprise: 1\n");
  EXPECT_STREQ(e.what(), "test.yaml:1:1: unknown key 'surprise'");
  e = error_of("agent:\n  log_level: loud\n");
  EXPECT_NE(std::string(e.what()).find("must be one of"), std::string::npos);
  e = error_of("ingest: {shm_dir: relative/path}\n");
  EXPECT_NE(std::string(e.what()).find("absolute"), std::string::npos);
  e = error_of("agent:\n  keep_capabilities: [CAP_KILL, 'rm -rf']\n");
  EXPECT_NE(std::string(e.what()).find("'rm -rf' is not a capability name"), std::string::npos);
  e = error_of("ebpf:\n  probes: {exec: true, kprobe: true}\n");
  EXPECT_NE(std::string(e.what()).find("unknown key 'kprobe'"), std::string::npos) << e.what();
  e = error_of("ebpf:\n  ring_buffer_size: 5000\n");
  EXPECT_NE(std::string(e.what()).find("power of two"), std::string::npos) << e.what();
  e = error_of("ebpf:\n  files: {watch_dirs: [models]}\n");
  EXPECT_NE(std::string(e.what()).find("not an absolute path"), std::string::npos) << e.what();
  e = error_of("agent:\n  log_level: info\n  state_dir: var/lib/mltap\n");
  EXPECT_NE(std::string(e.what()).find("test.yaml:3:14"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("must be an absolute path"), std::string::npos) << e.what();
  e = error_of("agent:\n  checkpoint_interval: 1ms\n");
  EXPECT_NE(std::string(e.what()).find("checkpoint_interval"), std::string::npos) << e.what();
  e = error_of("agent:\n  listen: 0.0.0.0:9645\n  api_token_file: api.token\n");
  EXPECT_STREQ(e.what(), "test.yaml:3:19: 'agent.api_token_file': must be an absolute path") << e.what();
  e = error_of("agent:\n  api_allowed_users: [root, 'a b']\n");
  EXPECT_NE(std::string(e.what()).find("'a b' is not a user name or uid"), std::string::npos) << e.what();
  e = error_of("agent:\n  listen: [\n");
  EXPECT_GT(e.line(), 0) << "YAML syntax errors carry a position too";
}

TEST(AgentConfig, ValuesAreApplied) {
  const auto c = mltapd::parse_agent_config_text(
      "agent: {listen: '[::1]:1234', log_level: debug}\n"
      "ingest: {namespace: prod, scan_interval: 1s, max_streams: 10, max_segment_bytes: 1GiB}\n",
      "t.yaml");
  EXPECT_EQ(c.agent.listen, "[::1]:1234");
  EXPECT_EQ(c.agent.api_token_file, "");  // default: none (docs/http.md)
  EXPECT_EQ(c.agent.log_level, "debug");
  EXPECT_EQ(c.ingest.ns, "prod");
  EXPECT_EQ(c.ingest.scan_interval, 1s);
  EXPECT_EQ(c.ingest.max_streams, 10u);
  EXPECT_EQ(c.ingest.reader.max_segment_bytes, 1ull << 30);
  const auto e = mltapd::parse_agent_config_text(
      "agent: {drop_capabilities: false, keep_capabilities: [CAP_KILL], api_token_file: /etc/mltap/api.token}\n"
      "ebpf: {attach_mode: raw_tp, probes: {runqueue: false}, files: {watch_dirs: [/srv/models]}}\n",
      "t.yaml");
  EXPECT_FALSE(e.agent.drop_capabilities);
  EXPECT_EQ(e.agent.api_token_file, "/etc/mltap/api.token");
  const auto u = mltapd::parse_agent_config_text("agent: {api_allowed_users: [root, '1000']}\n", "t.yaml");
  EXPECT_EQ(u.agent.api_allowed_users, (std::vector<std::string>{"root", "1000"}));
  EXPECT_EQ(e.agent.keep_capabilities, std::vector<std::string>{"CAP_KILL"});
  const auto st = mltapd::parse_agent_config_text(
      "agent: {state_dir: /srv/mltap-state, checkpoint_interval: 500ms}\n", "t.yaml");
  EXPECT_EQ(st.agent.state_dir, "/srv/mltap-state");
  EXPECT_EQ(st.agent.checkpoint_interval, 500ms);
  EXPECT_EQ(e.ebpf.attach_mode, bpf::AttachMode::raw_tp);
  EXPECT_FALSE(e.ebpf.probe_enabled(bpf::Probe::runqueue));
  EXPECT_TRUE(e.ebpf.probe_enabled(bpf::Probe::exec));
  EXPECT_EQ(e.ebpf.files.watch_dirs, std::vector<std::string>{"/srv/models"});
}

// packaging/mltapd.yaml documents the defaults: parsing it must change nothing but state_dir.
TEST(AgentConfig, DocumentedFileEqualsEmbeddedDefaults) {
  const auto file = mltapd::load_agent_config(std::string(MLTAP_SOURCE_DIR) + "/packaging/mltapd.yaml");
  const mltapd::AgentConfig d;
  EXPECT_EQ(file.agent.listen, d.agent.listen);
  EXPECT_EQ(file.agent.log_level, d.agent.log_level);
  EXPECT_EQ(file.agent.drop_capabilities, d.agent.drop_capabilities);
  EXPECT_EQ(file.agent.keep_capabilities, d.agent.keep_capabilities);
  // The one exception: the package keeps state in the unit's StateDirectory; the embedded
  // default keeps none, so that mltapd run by hand never writes to /var/lib.
  EXPECT_EQ(file.agent.state_dir, "/var/lib/mltap");
  EXPECT_EQ(d.agent.state_dir, "");
  EXPECT_EQ(file.agent.checkpoint_interval, d.agent.checkpoint_interval);
  EXPECT_EQ(file.ingest.poll_interval, d.ingest.poll_interval);
  EXPECT_EQ(file.ingest.idle_poll_interval, d.ingest.idle_poll_interval);
  EXPECT_EQ(file.ingest.read_delay, d.ingest.read_delay);
  EXPECT_EQ(file.ingest.snapshot_interval, d.ingest.snapshot_interval);
  const auto& e = file.ebpf;
  const auto& f = d.ebpf;
  EXPECT_EQ(e.enabled, f.enabled);
  EXPECT_EQ(e.attach_mode, f.attach_mode);
  EXPECT_EQ(e.probes, f.probes);
  EXPECT_EQ(e.files.patterns, f.files.patterns);
  EXPECT_EQ(e.files.watch_dirs, f.files.watch_dirs);
  EXPECT_EQ(e.files.report_untracked_actors, f.files.report_untracked_actors);
  EXPECT_EQ(e.ring_buffer_bytes, f.ring_buffer_bytes);
  EXPECT_EQ(e.max_tracked_processes, f.max_tracked_processes);
  EXPECT_EQ(e.report_threads, f.report_threads);
  EXPECT_EQ(e.tcp_retransmit_min_interval, f.tcp_retransmit_min_interval);
  EXPECT_EQ(e.summary_interval, f.summary_interval);
  EXPECT_EQ(e.runqueue_report_threshold, f.runqueue_report_threshold);
  EXPECT_EQ(e.block_io_report_threshold, f.block_io_report_threshold);
  EXPECT_EQ(e.latency_min_samples, f.latency_min_samples);
  EXPECT_EQ(e.mount_tracefs, f.mount_tracefs);
  EXPECT_EQ(e.btf_path, f.btf_path);
  const auto& a = file.ingest;
  const auto& b = d.ingest;
  EXPECT_EQ(a.ns, b.ns);
  EXPECT_EQ(a.shm_dir, b.shm_dir);
  EXPECT_EQ(a.proc_dir, b.proc_dir);
  EXPECT_EQ(a.poll_interval, b.poll_interval);
  EXPECT_EQ(a.scan_interval, b.scan_interval);
  EXPECT_EQ(a.stats_window, b.stats_window);
  EXPECT_EQ(a.dead_producer_grace, b.dead_producer_grace);
  EXPECT_EQ(a.closed_segment_grace, b.closed_segment_grace);
  EXPECT_EQ(a.snapshot_interval, b.snapshot_interval);
  EXPECT_EQ(a.max_streams, b.max_streams);
  EXPECT_EQ(a.max_streams_per_uid, b.max_streams_per_uid);
  EXPECT_EQ(a.max_segments_per_uid, b.max_segments_per_uid);
  EXPECT_EQ(a.max_streams_per_uid, 64u);
  EXPECT_EQ(a.max_segments_per_uid, 256u);
  EXPECT_EQ(a.max_features_per_stream, b.max_features_per_stream);
  EXPECT_EQ(a.remove_dead_segments, b.remove_dead_segments);
  EXPECT_EQ(a.reader.max_segment_bytes, b.reader.max_segment_bytes);
  EXPECT_EQ(a.reader.max_records_per_poll, b.reader.max_records_per_poll);
}

// yaml-cpp keeps both entries of a repeated key and answers with the first: a second `agent:`
// section (two files pasted together) must be an error, not silently ignored.
TEST(AgentConfig, DuplicateKeysAreErrorsAtTheSecondOccurrence) {
  auto e = error_of("agent:\n  listen: 127.0.0.1:1\ningest:\n  namespace: a\nagent:\n  log_level: debug\n");
  EXPECT_EQ(e.line(), 5);
  EXPECT_EQ(e.column(), 1);
  EXPECT_NE(std::string(e.what()).find("duplicate key 'agent' (first at line 1)"), std::string::npos)
      << e.what();
  e = error_of("detectors:\n  streams:\n    s/a:\n      window_records: 10\n      window_records: 20\n");
  EXPECT_EQ(e.line(), 5);
  EXPECT_EQ(e.column(), 7);
}

TEST(ConfigReader, SectionTextComparesSettingsNotLayout) {
  const auto a = core::load_text("# a comment\nagent: {listen: '127.0.0.1:1', log_level: info}\n", "a");
  const auto b = core::load_text("agent:\n  listen: 127.0.0.1:1\n  log_level: info\ningest: {}\n", "b");
  const auto c = core::load_text("agent:\n  listen: 127.0.0.1:1\n  log_level: debug\n", "c");
  EXPECT_EQ(a.section_text("agent"), b.section_text("agent"));
  EXPECT_NE(a.section_text("agent"), c.section_text("agent"));
  EXPECT_EQ(a.section_text("ingest"), "");
  EXPECT_NE(b.section_text("ingest"), "");
}

}  // namespace
}  // namespace mltap::test
