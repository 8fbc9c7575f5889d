// Replays a file of prediction and label events, in their arrival order, through one StreamJoin
// and prints the published state as JSON: what join_oracle.py compares with its pandas merge.
// The agent's clock is the largest timestamp seen so far (the events are stamped by their
// producers' clocks, which is what the agent's wall clock follows), and after the last event it
// runs far past every TTL so that everything pending expires.
//
//   perf_replay EVENTS TASK TTL_NS GRACE_NS WINDOW_NS MAX_PENDING [STATE_DIR|-] [SLICE_MAX_VALUES]
//               [--reference-pairs=N] [--min-bin-pairs=N] [--max-unsupported=X]  (estimates)
// EVENTS: records of {uint8 kind (0 prediction, 1 label), 7 pad, uint64 trace_id, int64 ts_ns,
// double value, double slice}, 40 bytes each; with SLICE_MAX_VALUES > 0 the stream is sliced
// (column "slice") and each prediction's slice value is `slice`.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "agent/api/performance_json.hpp"
#include "agent/performance/stream_join.hpp"

struct Event {
  std::uint8_t kind;
  std::uint8_t pad[7];
  std::uint64_t trace_id;
  std::int64_t ts_ns;
  double value;
  double slice;
};
static_assert(sizeof(Event) == 40);

int main(int argc, char** argv) {
  // stdout is the JSON document; the component's log (e.g. the estimates' reference fitted) is not.
  spdlog::set_default_logger(spdlog::stderr_color_st("perf_replay"));
  std::vector<std::string> flags;
  {
    int kept = 1;
    for (int i = 1; i < argc; ++i) {
      if (std::string(argv[i]).rfind("--", 0) == 0) flags.emplace_back(argv[i]);
      else argv[kept++] = argv[i];
    }
    argc = kept;
  }
  if (argc < 7) {
    std::fprintf(stderr, "usage: perf_replay EVENTS TASK TTL_NS GRACE_NS WINDOW_NS MAX_PENDING [STATE_DIR|-] "
                         "[SLICE_MAX_VALUES]\n");
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::vector<Event> events;
  Event e{};
  while (in.read(reinterpret_cast<char*>(&e), sizeof e)) events.push_back(e);
  const auto task = mltap::performance::parse_task(argv[2]);
  if (!task) {
    std::fprintf(stderr, "bad task\n");
    return 2;
  }
  mltap::performance::PerformanceConfig cfg;
  cfg.label_ttl = std::chrono::nanoseconds(std::atoll(argv[3]));
  cfg.grace = std::chrono::nanoseconds(std::atoll(argv[4]));
  cfg.window = std::chrono::nanoseconds(std::atoll(argv[5]));
  // Far: the heavy-tailed lags move the clock up to a year ahead; every window stays.
  cfg.retention = std::chrono::hours(24 * 365 * 50);
  cfg.max_pending = std::strtoull(argv[6], nullptr, 10);
  cfg.max_pending_bytes = 1ull << 40;
  const std::string dir = argc > 7 && std::string(argv[7]) != "-" ? argv[7] : "";
  const long slice_max = argc > 8 ? std::atol(argv[8]) : 0;
  if (slice_max > 0) {
    mltap::performance::StreamSettings st;
    st.labels_stream = "oracle/labels";
    st.task = *task;
    st.slice_column = "slice";
    st.slice_max_values = static_cast<std::uint32_t>(slice_max);
    cfg.streams["oracle/predictions"] = st;
  }
  for (const auto& f : flags) {
    const auto eq = f.find('=');
    const std::string key = f.substr(0, eq), value = eq == std::string::npos ? "" : f.substr(eq + 1);
    if (key == "--reference-pairs") cfg.reference_pairs = std::strtoull(value.c_str(), nullptr, 10);
    else if (key == "--min-bin-pairs") cfg.estimate_min_bin_pairs = static_cast<std::uint32_t>(std::atoi(value.c_str()));
    else if (key == "--max-unsupported") cfg.estimate_max_unsupported = std::atof(value.c_str());
    else {
      std::fprintf(stderr, "unknown flag %s\n", f.c_str());
      return 2;
    }
  }
  mltap::performance::StreamJoin join({"oracle/predictions", "oracle/labels", *task, 0}, cfg, dir);
  std::int64_t now = 0;
  std::int64_t next_tick = 0;
  for (const auto& ev : events) {
    now = std::max(now, ev.ts_ns);
    if (ev.kind == 0) join.prediction(ev.trace_id, ev.ts_ns, ev.value, now, join.slice_code(ev.slice));
    else join.label(ev.trace_id, ev.ts_ns, ev.value, now);
    if (now >= next_tick) {  // the ingest loop's ticks, once a (replayed) second
      join.tick(now);
      next_tick = now + 1'000'000'000;
    }
  }
  join.flush();
  const std::int64_t end = now + cfg.label_ttl.count() + cfg.grace.count() + 1;
  join.tick(end, true);
  std::cout << mltap::api::to_json(join.state(), INT64_MIN).dump() << "\n";
  return 0;
}
