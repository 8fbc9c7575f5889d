#include "agent/correlator/correlator.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <set>

#include "agent/correlator/describe.hpp"

namespace mltap::correlator {

using core::EventKind;
using core::ProcessRef;
using core::SystemEvent;

namespace {

using core::FindingKind;

enum class FindingClass { drift_like, availability, data_quality };

FindingClass classify(FindingKind k) {
  switch (k) {
    case FindingKind::staleness:
    case FindingKind::throughput: return FindingClass::availability;
    case FindingKind::data_quality: return FindingClass::data_quality;
    case FindingKind::drift:
    case FindingKind::schema_change:
    case FindingKind::sequential_change:
    case FindingKind::prediction_drift:
    case FindingKind::embedding_drift:
    case FindingKind::performance: return FindingClass::drift_like;
  }
  return FindingClass::drift_like;
}

// Rows: event kind; columns: drift-like, availability (staleness/throughput), data quality.
struct Weights {
  double drift, availability, quality;
  double for_class(FindingClass c) const {
    switch (c) {
      case FindingClass::drift_like: return drift;
      case FindingClass::availability: return availability;
      case FindingClass::data_quality: return quality;
    }
    return drift;
  }
};

bool matches(const core::ProducerId& p, std::uint32_t pid, std::uint64_t ticks) {
  return p.pid == pid && (p.start_ticks == ticks || p.start_ticks == 0 || ticks == 0);
}

bool any_matches(const std::vector<core::ProducerId>& ps, std::uint32_t pid, std::uint64_t ticks) {
  return std::any_of(ps.begin(), ps.end(), [&](const auto& p) { return matches(p, pid, ticks); });
}

}  // namespace

double kind_weight(const SystemEvent& e, FindingKind finding) noexcept {
  static constexpr Weights oom{0.9, 1.0, 0.8};
  static constexpr Weights fatal_signal{0.8, 1.0, 0.7};
  static constexpr Weights stop_request{0.5, 0.7, 0.4};
  static constexpr Weights bad_exit{0.8, 1.0, 0.7};
  static constexpr Weights clean_exit{0.5, 0.7, 0.4};  // a restart
  static constexpr Weights file{1.0, 0.4, 0.8};         // the model/artifact changed
  static constexpr Weights exec{0.6, 0.6, 0.5};         // a new program (version) started
  static constexpr Weights fork{0.1, 0.1, 0.1};
  static constexpr Weights connect_failed{0.4, 0.8, 0.7};  // missing upstream data
  static constexpr Weights retransmit{0.2, 0.6, 0.3};
  static constexpr Weights runqueue{0.2, 0.8, 0.2};
  static constexpr Weights block_io{0.2, 0.7, 0.2};
  const FindingClass c = classify(finding);
  switch (e.kind) {
    case EventKind::oom_kill: return oom.for_class(c);
    case EventKind::signal: return (e.fatal ? fatal_signal : stop_request).for_class(c);
    case EventKind::exit:
      return (e.exit_code.value_or(1) == 0 && e.signal == 0 ? clean_exit : bad_exit).for_class(c);
    case EventKind::file_change: return file.for_class(c);
    case EventKind::exec: return exec.for_class(c);
    case EventKind::fork: return fork.for_class(c);
    case EventKind::tcp_connect_failed: return connect_failed.for_class(c);
    case EventKind::tcp_retransmit: return retransmit.for_class(c);
    case EventKind::runqueue_latency: return runqueue.for_class(c);
    case EventKind::block_io_latency: return block_io.for_class(c);
  }
  return 0.1;
}

double relation_weight(const SystemEvent& e, Relation r) noexcept {
  switch (r) {
    case Relation::producer: return 1.0;
    case Relation::producer_child: return 0.9;
    case Relation::same_component: return 0.6;
    case Relation::host:
      // Watched model directories are configured because pipelines load from them.
      return e.kind == EventKind::file_change ? 0.8 : 0.5;
  }
  return 0.5;
}

double recency(std::uint64_t age_ns, std::chrono::nanoseconds half_life) noexcept {
  if (half_life.count() <= 0) return 1.0;
  const double halves = static_cast<double>(age_ns) / static_cast<double>(half_life.count());
  return 0.5 + 0.5 * std::exp2(-halves);
}

Correlator::Correlator(CorrelatorConfig config) : cfg_(std::move(config)) {
  cfg_.max_events_per_process = std::max<std::size_t>(1, cfg_.max_events_per_process);
  cfg_.max_processes = std::max<std::size_t>(1, cfg_.max_processes);
  cfg_.max_host_events = std::max<std::size_t>(1, cfg_.max_host_events);
}

void Correlator::add_event(const SystemEvent& e) {
  std::lock_guard lk(mu_);
  newest_unix_ns_ = std::max(newest_unix_ns_, e.unix_ns);
  if (!e.tracked) {
    host_.push_back(e);
    while (host_.size() > cfg_.max_host_events) {
      host_.pop_front();
      ++dropped_;
    }
  } else {
    const ProcessRef& o = e.owner();
    const core::ProducerId key{o.pid, o.start_ticks};
    auto it = timelines_.find(key);
    if (it == timelines_.end()) {
      if (timelines_.size() >= cfg_.max_processes) {
        // Drop the timeline that has been quiet the longest.
        auto oldest = std::min_element(timelines_.begin(), timelines_.end(), [](const auto& a, const auto& b) {
          return a.second.last_unix_ns < b.second.last_unix_ns;
        });
        dropped_ += oldest->second.events.size();
        timelines_.erase(oldest);
      }
      it = timelines_.emplace(key, Timeline{}).first;
    }
    Timeline& tl = it->second;
    if (!e.component.empty()) tl.component = e.component;
    tl.events.push_back(e);
    tl.last_unix_ns = std::max(tl.last_unix_ns, e.unix_ns);
    while (tl.events.size() > cfg_.max_events_per_process) {
      tl.events.pop_front();
      ++dropped_;
    }
  }
  prune_locked(newest_unix_ns_);
}

void Correlator::prune_locked(std::uint64_t now) {
  const auto keep = static_cast<std::uint64_t>(cfg_.retention.count());
  if (now <= keep) return;
  const std::uint64_t horizon = now - keep;
  while (!host_.empty() && host_.front().unix_ns < horizon) {
    host_.pop_front();
    ++dropped_;
  }
  for (auto it = timelines_.begin(); it != timelines_.end();) {
    auto& ev = it->second.events;
    while (!ev.empty() && ev.front().unix_ns < horizon) {
      ev.pop_front();
      ++dropped_;
    }
    if (ev.empty()) it = timelines_.erase(it);
    else ++it;
  }
}

void Correlator::note_producer(const std::string& stream, const std::string& component,
                               core::ProducerId producer) {
  std::lock_guard lk(mu_);
  auto it = streams_.find(stream);
  if (it == streams_.end()) {
    if (streams_.size() >= cfg_.max_streams) return;  // bounded; the caller passes live producers
    it = streams_.emplace(stream, StreamHistory{}).first;
  }
  auto& h = it->second;
  h.component = component;
  if (std::find(h.producers.begin(), h.producers.end(), producer) != h.producers.end()) return;
  h.producers.push_back(producer);
  while (h.producers.size() > cfg_.max_producers_per_stream) h.producers.pop_front();
}

std::vector<core::ProducerId> Correlator::producers_of(const std::string& stream) const {
  std::lock_guard lk(mu_);
  auto it = streams_.find(stream);
  if (it == streams_.end()) return {};
  return {it->second.producers.begin(), it->second.producers.end()};
}

std::vector<RelatedEvent> Correlator::related(const core::Finding& finding,
                                              const std::vector<core::ProducerId>& given,
                                              std::chrono::nanoseconds window) const {
  std::lock_guard lk(mu_);
  std::vector<core::ProducerId> producers = given;
  if (auto it = streams_.find(finding.stream); it != streams_.end()) {
    for (const auto& p : it->second.producers) {
      if (std::find(producers.begin(), producers.end(), p) == producers.end()) producers.push_back(p);
    }
  }
  const std::uint64_t opened = finding.opened_unix_ns;
  const std::uint64_t onset = finding.onset_or_opened();
  const auto w = static_cast<std::uint64_t>(std::max<std::int64_t>(0, window.count()));
  const std::uint64_t from = onset > w ? onset - w : 0;
  const std::uint64_t to = opened + static_cast<std::uint64_t>(std::max<std::int64_t>(0, cfg_.grace_after.count()));
  const std::uint64_t cause_until =
      onset + std::max(finding.onset_resolution_ns,
                       static_cast<std::uint64_t>(std::max<std::int64_t>(0, cfg_.onset_margin.count())));

  std::vector<RelatedEvent> out;
  auto consider = [&](const SystemEvent& e, Relation rel) {
    if (e.unix_ns < from || e.unix_ns > to) return;
    RelatedEvent r;
    r.event = e;
    r.relation = rel;
    r.after_onset = e.unix_ns > cause_until;
    const std::uint64_t age = onset > e.unix_ns ? onset - e.unix_ns : e.unix_ns - onset;
    r.score = kind_weight(e, finding.kind) * relation_weight(e, rel) * recency(age, cfg_.half_life);
    std::string when;
    if (onset >= e.unix_ns) {
      when = format_duration(age) + " before the onset";
    } else if (!r.after_onset) {
      when = "at the onset (" + format_duration(age) + " after its estimate)";
    } else {
      when = format_duration(age) + " after the onset";
    }
    if (e.unix_ns > opened) when += ", " + format_duration(e.unix_ns - opened) + " after the finding opened";
    std::string whose;
    switch (rel) {
      case Relation::producer: whose = "a producer of " + finding.stream; break;
      case Relation::producer_child: whose = "a child of a producer of " + finding.stream; break;
      case Relation::same_component: whose = "another process of component " + finding.component; break;
      case Relation::host: whose = "host-wide"; break;
    }
    r.why = describe(e) + "; " + when + " (" + whose + ")";
    out.push_back(std::move(r));
  };
  for (const auto& [key, tl] : timelines_) {
    const bool is_producer = any_matches(producers, key.pid, key.start_ticks);
    const bool same_comp = !is_producer && !finding.component.empty() && tl.component == finding.component;
    if (!is_producer && !same_comp) continue;
    for (const auto& e : tl.events) {
      Relation rel = Relation::same_component;
      if (is_producer) {
        rel = any_matches(producers, e.subject.pid, e.subject.start_ticks) ? Relation::producer
                                                                           : Relation::producer_child;
      }
      consider(e, rel);
    }
  }
  for (const auto& e : host_) {
    // An OOM kill elsewhere triggered by a producer's allocation is the producer's doing.
    const bool by_producer = e.other.known() && any_matches(producers, e.other.pid, e.other.start_ticks);
    consider(e, by_producer ? Relation::producer : Relation::host);
  }
  // Candidate causes first, most plausible first; then what followed the onset, in time order.
  auto after = std::stable_partition(out.begin(), out.end(), [](const RelatedEvent& r) { return !r.after_onset; });
  std::stable_sort(out.begin(), after, [](const RelatedEvent& a, const RelatedEvent& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.event.unix_ns > b.event.unix_ns;
  });
  std::stable_sort(after, out.end(), [](const RelatedEvent& a, const RelatedEvent& b) {
    return a.event.unix_ns < b.event.unix_ns;
  });
  const auto before = static_cast<std::size_t>(after - out.begin());
  const std::size_t keep_before = std::min(before, cfg_.max_related);
  const std::size_t keep_after = std::min(out.size() - before, cfg_.max_related);
  std::vector<RelatedEvent> ranked;
  ranked.reserve(keep_before + keep_after);
  std::move(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(keep_before), std::back_inserter(ranked));
  std::move(after, after + static_cast<std::ptrdiff_t>(keep_after), std::back_inserter(ranked));
  return ranked;
}

std::vector<SystemEvent> Correlator::events_for(const std::vector<core::ProducerId>& producers,
                                                std::uint64_t since, bool include_host,
                                                std::size_t limit) const {
  std::lock_guard lk(mu_);
  std::vector<SystemEvent> out;
  for (const auto& [key, tl] : timelines_) {
    if (!any_matches(producers, key.pid, key.start_ticks)) continue;
    for (const auto& e : tl.events) {
      if (e.unix_ns >= since) out.push_back(e);
    }
  }
  if (include_host) {
    for (const auto& e : host_) {
      if (e.unix_ns >= since) out.push_back(e);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const SystemEvent& a, const SystemEvent& b) {
    return a.unix_ns < b.unix_ns;
  });
  if (out.size() > limit) out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(limit));
  return out;
}

CorrelatorStats Correlator::stats() const {
  std::lock_guard lk(mu_);
  CorrelatorStats s;
  s.events = host_.size();
  for (const auto& [k, tl] : timelines_) s.events += tl.events.size();
  s.timelines = timelines_.size();
  s.dropped = dropped_;
  return s;
}

}  // namespace mltap::correlator
