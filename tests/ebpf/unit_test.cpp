// Unit tests of the loader's parts that need no kernel: configuration, /proc parsing, fanotify
// record parsing (hostile input), histograms and the clock conversion.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/fanotify.h>

#include <cstring>

#include "bpf/config.hpp"
#include "bpf/src/file_watch.hpp"
#include "bpf/src/proc.hpp"
#include "bpf/src/wall_clock.hpp"
#include "core/tracer_stats.hpp"

namespace mltap::bpf {

using core::Log2Histogram;

namespace {

TracerConfig parse(const std::string& yaml) {
  auto root = core::load_text(yaml, "test.yaml");
  core::ConfigSection top(root, "test.yaml", "");
  auto s = top.child("ebpf");
  return parse_tracer_config(s);
}

TEST(TracerConfig, Defaults) {
  const TracerConfig c = parse("ebpf: {}\n");
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.attach_mode, AttachMode::automatic);
  EXPECT_TRUE(c.probe_enabled(Probe::exec));
  EXPECT_FALSE(c.probe_enabled(Probe::file_syscalls)) << "taxes every process: off by default";
  EXPECT_EQ(c.ring_buffer_bytes, 256u * 1024);
  EXPECT_NE(std::find(c.files.patterns.begin(), c.files.patterns.end(), "*.safetensors"),
            c.files.patterns.end());
}

TEST(TracerConfig, FullSection) {
  const TracerConfig c = parse(R"(ebpf:
  enabled: true
  attach_mode: raw_tp
  probes: {runqueue: false, file_syscalls: true}
  files:
    patterns: ["*.onnx", "model_*"]
    watch_dirs: [/srv/models]
    report_untracked_actors: false
  ring_buffer_size: 1MiB
  max_tracked_processes: 100
  report_threads: true
  tcp_retransmit_min_interval: 250ms
  summary_interval: 5s
  runqueue_report_threshold: 20ms
  block_io_report_threshold: 0s
  latency_min_samples: 7
  mount_tracefs: false
  btf_path: /boot/vmlinux.btf
)");
  EXPECT_EQ(c.attach_mode, AttachMode::raw_tp);
  EXPECT_FALSE(c.probe_enabled(Probe::runqueue));
  EXPECT_TRUE(c.probe_enabled(Probe::file_syscalls));
  EXPECT_EQ(c.files.patterns.size(), 2u);
  EXPECT_EQ(c.files.watch_dirs.at(0), "/srv/models");
  EXPECT_FALSE(c.files.report_untracked_actors);
  EXPECT_EQ(c.ring_buffer_bytes, 1u << 20);
  EXPECT_EQ(c.max_tracked_processes, 100u);
  EXPECT_TRUE(c.report_threads);
  EXPECT_EQ(c.tcp_retransmit_min_interval, std::chrono::milliseconds(250));
  EXPECT_EQ(c.block_io_report_threshold.count(), 0);
  EXPECT_EQ(c.latency_min_samples, 7u);
  EXPECT_FALSE(c.mount_tracefs);
  EXPECT_EQ(c.btf_path, "/boot/vmlinux.btf");
}

void expect_error(const std::string& yaml, const std::string& needle) {
  try {
    parse(yaml);
    ADD_FAILURE() << "accepted: " << yaml;
  } catch (const core::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_GT(e.line(), 0) << e.what();
  }
}

TEST(TracerConfig, RejectsWhatItDoesNotKnow) {
  expect_error("ebpf:\n  ringbuffer: 4KiB\n", "ringbuffer");
  expect_error("ebpf:\n  probes:\n    kprobes: true\n", "kprobes");
  expect_error("ebpf:\n  files:\n    watch: [/x]\n", "watch");
  expect_error("ebpf:\n  ring_buffer_size: 5000\n", "power of two");
  expect_error("ebpf:\n  ring_buffer_size: 1KiB\n", "ring_buffer_size");
  expect_error("ebpf:\n  files:\n    patterns: [models/*.pt]\n", "contains '/'");
  expect_error("ebpf:\n  files:\n    patterns: []\n", "at least one");
  expect_error("ebpf:\n  files:\n    watch_dirs: [relative/dir]\n", "absolute");
  expect_error("ebpf:\n  attach_mode: kprobe\n", "attach_mode");
  expect_error("ebpf:\n  probes: {exec: maybe}\n", "exec");
}

TEST(ProcStat, ParsesHostileComm) {
  const std::string line =
      "4242 (a) (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 "
      "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
  auto st = naming::parse_proc_stat(line);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->comm, "a) (b) c");
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->ppid, 17u);
  EXPECT_EQ(st->start_ticks, 987654u);
  EXPECT_FALSE(naming::parse_proc_stat("4242 (x S 1 2"));
  EXPECT_FALSE(naming::parse_proc_stat("4242 (x) S notanumber 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 0 0 5"));
  EXPECT_FALSE(naming::parse_proc_stat(""));
}

TEST(ProcStat, ReadsThisProcess) {
  auto st = naming::read_proc_stat(static_cast<std::uint32_t>(getpid()), "/proc");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->ppid, static_cast<std::uint32_t>(getppid()));
  EXPECT_GT(st->start_ticks, 0u);
  EXPECT_FALSE(naming::read_proc_stat(1, "/nonexistent"));
}

// Builds one fanotify record: metadata + one DFID_NAME info with `name`.
std::vector<char> record(std::uint64_t mask, int pid, const std::string& name, int info_type,
                         std::size_t handle_bytes = 8) {
  std::vector<char> info(sizeof(fanotify_event_info_fid) + sizeof(file_handle) + handle_bytes +
                         name.size() + 1);
  auto* fid = reinterpret_cast<fanotify_event_info_fid*>(info.data());
  fid->hdr.info_type = static_cast<std::uint8_t>(info_type);
  fid->hdr.len = static_cast<std::uint16_t>(info.size());
  auto* fh = reinterpret_cast<file_handle*>(fid->handle);
  fh->handle_bytes = static_cast<unsigned>(handle_bytes);
  fh->handle_type = 1;
  std::memcpy(reinterpret_cast<char*>(fh->f_handle) + handle_bytes, name.c_str(), name.size() + 1);
  fanotify_event_metadata meta{};
  meta.event_len = static_cast<std::uint32_t>(sizeof(meta) + info.size());
  meta.vers = FANOTIFY_METADATA_VERSION;
  meta.metadata_len = sizeof(meta);
  meta.mask = mask;
  meta.fd = FAN_NOFD;
  meta.pid = pid;
  std::vector<char> out(reinterpret_cast<char*>(&meta), reinterpret_cast<char*>(&meta) + sizeof(meta));
  out.insert(out.end(), info.begin(), info.end());
  return out;
}

TEST(FileWatchParse, WellFormedRecords) {
  FileWatch w;
  auto a = record(FAN_CLOSE_WRITE, 77, "model.onnx", FAN_EVENT_INFO_TYPE_DFID_NAME);
  auto b = record(FAN_DELETE, 78, "old.pt", FAN_EVENT_INFO_TYPE_DFID_NAME);
  a.insert(a.end(), b.begin(), b.end());
  std::vector<RawFileEvent> got;
  EXPECT_EQ(w.parse(a.data(), a.size(), [&](const RawFileEvent& e) { got.push_back(e); }), 0u);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].name, "model.onnx");
  EXPECT_EQ(got[0].pid, 77u);
  EXPECT_EQ(got[0].mask, FAN_CLOSE_WRITE);
  EXPECT_EQ(got[0].dir, "") << "handle of no watched directory";
  EXPECT_EQ(got[1].name, "old.pt");
}

TEST(FileWatchParse, HostileRecordsAreDropped) {
  FileWatch w;
  int calls = 0;
  auto cb = [&](const RawFileEvent&) { ++calls; };
  auto good = record(FAN_CLOSE_WRITE, 1, "m.pt", FAN_EVENT_INFO_TYPE_DFID_NAME);
  // Truncated anywhere: never read past the end, never call back with garbage.
  for (std::size_t cut = 0; cut < good.size(); ++cut) w.parse(good.data(), cut, cb);
  EXPECT_EQ(calls, 0);
  // Name without its NUL inside the record.
  auto nonul = good;
  nonul.back() = 'x';
  w.parse(nonul.data(), nonul.size(), cb);
  EXPECT_EQ(calls, 0);
  // handle_bytes larger than the record.
  auto bighandle = good;
  auto* fid = reinterpret_cast<fanotify_event_info_fid*>(bighandle.data() + sizeof(fanotify_event_metadata));
  reinterpret_cast<file_handle*>(fid->handle)->handle_bytes = 4000;
  w.parse(bighandle.data(), bighandle.size(), cb);
  EXPECT_EQ(calls, 0);
  // info length running past the event.
  auto badlen = good;
  fid = reinterpret_cast<fanotify_event_info_fid*>(badlen.data() + sizeof(fanotify_event_metadata));
  fid->hdr.len = 60000;
  w.parse(badlen.data(), badlen.size(), cb);
  EXPECT_EQ(calls, 0);
  // Wrong version.
  auto badver = good;
  reinterpret_cast<fanotify_event_metadata*>(badver.data())->vers = 1;
  w.parse(badver.data(), badver.size(), cb);
  EXPECT_EQ(calls, 0);
  // Queue overflow is counted.
  fanotify_event_metadata ov{};
  ov.event_len = sizeof(ov);
  ov.vers = FANOTIFY_METADATA_VERSION;
  ov.metadata_len = sizeof(ov);
  ov.mask = FAN_Q_OVERFLOW;
  ov.fd = FAN_NOFD;
  EXPECT_EQ(w.parse(reinterpret_cast<const char*>(&ov), sizeof(ov), cb), 1u);
  w.parse(good.data(), good.size(), cb);
  EXPECT_EQ(calls, 1);
}

TEST(Log2Histogram, Quantiles) {
  Log2Histogram h;
  EXPECT_EQ(h.quantile_upper_ns(0.99), 0u);
  h.slots[10] = 99;  // [1024, 2048) ns
  h.slots[20] = 1;   // [~1 ms, ~2 ms)
  h.count = 100;
  EXPECT_EQ(h.quantile_upper_ns(0.5), 2048u);
  EXPECT_EQ(h.quantile_upper_ns(0.99), 2048u);
  EXPECT_EQ(h.quantile_upper_ns(1.0), std::uint64_t{1} << 21);
  EXPECT_EQ(h.max_upper_ns(), std::uint64_t{1} << 21);
  Log2Histogram g;
  g.add(h);
  g.add(h);
  EXPECT_EQ(g.count, 200u);
  EXPECT_EQ(g.slots[20], 2u);
}

TEST(WallClockTest, ConvertsBootTimeToUnixTime) {
  WallClock c;
  const std::uint64_t unix_now = WallClock::unix_now_ns();
  const std::uint64_t converted = c.to_unix_ns(WallClock::boot_now_ns());
  const std::int64_t diff = static_cast<std::int64_t>(converted) - static_cast<std::int64_t>(unix_now);
  EXPECT_LT(std::llabs(diff), 5'000'000) << "within 5 ms";
}

}  // namespace
}  // namespace mltap::bpf
