// The eBPF Prometheus collector: names, labels and histogram buckets as docs/metrics.md says,
// rendered by prometheus-cpp's text serializer.
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <cmath>

#include "exporters/metrics/ebpf_metrics.hpp"

namespace mltap::metrics {
namespace {

core::TracerStats sample() {
  core::TracerStats s;
  s.probes = {{"exec", true, "tp_btf", "", false},
              {"file_watch", false, "", "no directories to watch", true},
              {"oom_kill", false, "", "missing CAP_BPF", false}};
  s.events = {{"inference", "exec", 3}, {"", "oom_kill", 1}};
  s.lost_by_program = {{"exec", 2}, {"file_watch", 0}};
  s.map_full = {{"tracked", 1}};
  s.tracked_processes = 5;
  core::Log2Histogram h;
  h.slots[3] = 4;    // < 1 us: first bucket
  h.slots[19] = 10;  // [524 us, 1.05 ms): bucket le=2^20 ns
  h.slots[39] = 1;   // beyond 2^35 ns: +Inf only
  h.count = 15;
  h.sum_ns = 12'000'000;
  s.runqueue_by_component["inference"] = h;
  return s;
}

std::string render(const EbpfCollector& c) {
  return prometheus::TextSerializer().Serialize(c.Collect());
}

TEST(EbpfMetrics, FamiliesAndLabels) {
  EbpfCollector c([] { return sample(); });
  const std::string t = render(c);
  EXPECT_NE(t.find("mltap_ebpf_probe_up{probe=\"exec\"} 1"), std::string::npos) << t;
  EXPECT_NE(t.find("mltap_ebpf_probe_up{probe=\"file_watch\"} 0"), std::string::npos);
  // Off by configuration is not the same as broken: the alert rule needs to tell them apart.
  EXPECT_NE(t.find("mltap_ebpf_probe_enabled{probe=\"file_watch\"} 0"), std::string::npos) << t;
  EXPECT_NE(t.find("mltap_ebpf_probe_enabled{probe=\"oom_kill\"} 1"), std::string::npos) << t;
  EXPECT_NE(t.find("mltap_ebpf_probe_up{probe=\"oom_kill\"} 0"), std::string::npos) << t;
  EXPECT_NE(t.find("mltap_ebpf_events_total{component=\"inference\",kind=\"exec\"} 3"), std::string::npos);
  EXPECT_NE(t.find("mltap_ebpf_events_total{component=\"\",kind=\"oom_kill\"} 1"), std::string::npos);
  EXPECT_NE(t.find("mltap_ebpf_events_lost_total{program=\"exec\"} 2"), std::string::npos);
  EXPECT_NE(t.find("mltap_ebpf_map_full_total{map=\"tracked\"} 1"), std::string::npos);
  EXPECT_NE(t.find("mltap_ebpf_tracked_processes 5"), std::string::npos);
  EXPECT_EQ(t.find("pid"), std::string::npos) << "labels never carry a pid";
}

TEST(EbpfMetrics, HistogramBucketsAreCumulativeSeconds) {
  EbpfCollector c([] { return sample(); });
  const auto fams = c.Collect();
  const prometheus::MetricFamily* runq = nullptr;
  for (const auto& f : fams) {
    if (f.name == "mltap_process_runqueue_latency_seconds") runq = &f;
  }
  ASSERT_NE(runq, nullptr);
  ASSERT_EQ(runq->metric.size(), 1u);
  const auto& h = runq->metric[0].histogram;
  EXPECT_EQ(h.sample_count, 15u);
  EXPECT_DOUBLE_EQ(h.sample_sum, 0.012);
  ASSERT_EQ(h.bucket.size(), 27u);  // 2^10 .. 2^35 ns, +Inf
  EXPECT_DOUBLE_EQ(h.bucket[0].upper_bound, 1024e-9);
  EXPECT_EQ(h.bucket[0].cumulative_count, 4u);
  EXPECT_DOUBLE_EQ(h.bucket[10].upper_bound, 1048576e-9);  // 2^20 ns
  EXPECT_EQ(h.bucket[9].cumulative_count, 4u);
  EXPECT_EQ(h.bucket[10].cumulative_count, 14u);
  EXPECT_EQ(h.bucket[25].cumulative_count, 14u);
  EXPECT_TRUE(std::isinf(h.bucket[26].upper_bound));
  EXPECT_EQ(h.bucket[26].cumulative_count, 15u);
  for (std::size_t i = 1; i < h.bucket.size(); ++i) {
    EXPECT_GE(h.bucket[i].cumulative_count, h.bucket[i - 1].cumulative_count);
  }
}

TEST(EbpfMetrics, NoTracer) {
  EbpfCollector c(nullptr);
  const std::string t = render(c);
  EXPECT_NE(t.find("mltap_ebpf_tracked_processes 0"), std::string::npos);
}

}  // namespace
}  // namespace mltap::metrics
