// The correlator: a bounded timeline of system events per producer process (plus host-wide
// events such as OOM kills and model files replaced by untracked processes), and, for a finding,
// the events of that stream's producers around its onset, ranked by causal plausibility.
//
// Ranking (docs/ebpf.md, "Ranking"): a cause precedes its effect, so events up to the finding's
// onset (Finding::onset_unix_ns, plus its resolution, at least onset_margin) are the
// candidate causes and come first, by
//   score = kind_weight(event, finding kind) x relation_weight x recency
//   recency = 0.5 + 0.5 * 2^(-age / half_life), age = onset - event time (>= 0)
// so the kind of event and how close it is to the stream's producers decide, and proximity to the
// onset breaks ties. Kind weights favour model/artifact file changes for drift-like findings,
// crashes and network failures for staleness/throughput findings. Events after the onset (up to
// grace_after past the opening) are consequences or coincidences: they are marked after_onset and
// listed after every candidate cause, oldest first, whatever their score.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/batch.hpp"
#include "core/finding.hpp"
#include "core/system_event.hpp"

namespace mltap::correlator {

struct CorrelatorConfig {
  std::size_t max_events_per_process = 256;
  std::size_t max_processes = 1024;        // timelines; the least recently active is dropped
  std::size_t max_host_events = 512;       // OOM kills, untracked writers of model files
  std::size_t max_streams = 1024;          // stream -> producer history
  std::size_t max_producers_per_stream = 16;
  std::chrono::nanoseconds retention = std::chrono::hours(6);
  std::chrono::nanoseconds half_life = std::chrono::minutes(10);
  // Events shortly after a finding opened are still listed (after the onset).
  std::chrono::nanoseconds grace_after = std::chrono::seconds(30);
  // Events up to this long after the estimated onset, or its resolution when longer, still count
  // as before it (a block or window of records; producer vs kernel clocks).
  std::chrono::nanoseconds onset_margin = std::chrono::seconds(2);
  std::size_t max_related = 10;  // before the onset; as many again after it
};

inline constexpr std::chrono::nanoseconds kDefaultWindow = std::chrono::minutes(30);

// How an event's process relates to the stream of a finding.
enum class Relation : std::uint8_t {
  producer,        // a process that writes (or wrote) the stream
  producer_child,  // a child of a producer (tracked through it)
  same_component,  // another tracked process of the finding's component
  host,            // host-wide: OOM kill elsewhere, model file changed by an untracked process
};

constexpr std::string_view relation_name(Relation r) noexcept {
  switch (r) {
    case Relation::producer: return "producer";
    case Relation::producer_child: return "producer_child";
    case Relation::same_component: return "same_component";
    case Relation::host: return "host";
  }
  return "host";
}

struct RelatedEvent {
  core::SystemEvent event;
  double score = 0;      // 0..1, higher is more likely related
  Relation relation = Relation::host;
  std::string why;       // one sentence for humans
  bool after_onset = false;  // after the finding's onset: not a candidate cause
};

// The pieces of the relevance rule, exposed for documentation and tests.
double kind_weight(const core::SystemEvent& e, core::FindingKind finding) noexcept;
double relation_weight(const core::SystemEvent& e, Relation r) noexcept;
double recency(std::uint64_t age_ns, std::chrono::nanoseconds half_life) noexcept;

struct CorrelatorStats {
  std::size_t events = 0;     // stored now
  std::size_t timelines = 0;
  std::uint64_t dropped = 0;  // evicted by the bounds or the retention
};

class Correlator {
 public:
  explicit Correlator(CorrelatorConfig config = {});

  // Thread-safe; called from the tracer's thread.
  void add_event(const core::SystemEvent& e);
  // Remembers that `producer` writes `stream` (call when the agent discovers a producer), so that
  // a finding raised after the producer died (OOM-killed, restarted) still finds its events.
  void note_producer(const std::string& stream, const std::string& component,
                     core::ProducerId producer);
  std::vector<core::ProducerId> producers_of(const std::string& stream) const;

  // Events related to `finding`: those of the stream's producers (the given ones and the ones
  // noted for finding.stream), their children, other processes of the component and host-wide
  // events, from `window` before the finding's onset to grace_after after it opened: first those
  // before the onset, ranked (at most max_related), then those after it, oldest first (at most
  // max_related).
  std::vector<RelatedEvent> related(const core::Finding& finding,
                                    const std::vector<core::ProducerId>& producers_of_stream,
                                    std::chrono::nanoseconds window = kDefaultWindow) const;

  // Timeline of the producers (and their children) since `since_unix_ns`, oldest first, with
  // host-wide events when `include_host`; at most `limit` (the newest).
  std::vector<core::SystemEvent> events_for(const std::vector<core::ProducerId>& producers,
                                      std::uint64_t since_unix_ns, bool include_host = true,
                                      std::size_t limit = 1000) const;

  CorrelatorStats stats() const;
  const CorrelatorConfig& config() const noexcept { return cfg_; }

 private:
  struct Timeline {
    std::string component;
    std::deque<core::SystemEvent> events;  // in arrival order (kernel time order per CPU ring)
    std::uint64_t last_unix_ns = 0;
  };
  struct StreamHistory {
    std::string component;
    std::deque<core::ProducerId> producers;
  };
  void prune_locked(std::uint64_t now_unix_ns);

  CorrelatorConfig cfg_;
  mutable std::mutex mu_;
  std::map<core::ProducerId, Timeline> timelines_;
  std::deque<core::SystemEvent> host_;
  std::map<std::string, StreamHistory> streams_;
  std::uint64_t newest_unix_ns_ = 0;
  std::uint64_t dropped_ = 0;
};

}  // namespace mltap::correlator
