#include "agent/mltapd/agent.hpp"

#include <malloc.h>
#include <pwd.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include <spdlog/spdlog.h>

#include "core/log.hpp"
#include <nlohmann/json.hpp>

#include "agent/api/detector_json.hpp"
#include "agent/api/event_json.hpp"
#include "agent/api/http_client.hpp"
#include "agent/api/retention_api.hpp"
#include "agent/api/routes.hpp"
#include "agent/correlator/describe.hpp"
#include "bpf/capabilities.hpp"
#include "core/time.hpp"
#include "exporters/metrics/alertmanager_metrics.hpp"
#include "exporters/metrics/detector_metrics.hpp"
#include "exporters/metrics/ebpf_metrics.hpp"
#include "exporters/metrics/ingest_metrics.hpp"
#include "exporters/metrics/performance_metrics.hpp"
#include "exporters/metrics/reaction_metrics.hpp"
#include "exporters/metrics/retention_metrics.hpp"
#include "exporters/metrics/state_metrics.hpp"
#ifdef MLTAP_HAVE_BPF
#include "bpf/tracer.hpp"
#endif

namespace mltap::mltapd {

Agent::Agent(AgentConfig config) : config_(std::move(config)) {}

Agent::~Agent() { stop(); }

bool Agent::start(std::string& error) {
  api::ListenAddress addr;
  if (!api::parse_listen_address(config_.agent.listen, addr, error)) return false;
  try {
    build_pipeline();  // a configured reference profile that cannot be loaded throws
  } catch (const std::exception& e) {
    error = e.what();
    return false;
  }
  build_system_events();
  try {
    build_reactions();  // unusable token file, exec path... throw
    build_alertmanager_push(addr);
  } catch (const std::exception& e) {
    error = e.what();
    return false;
  }
  http_ = std::make_unique<api::HttpServer>(addr);
  if (!config_.agent.api_token_file.empty()) {
    try {
      http_->set_read_token(webhook::load_bearer_token(config_.agent.api_token_file));
    } catch (const std::exception& e) {
      error = std::string("agent.api_token_file: ") + e.what();
      return false;
    }
  }
  if (!config_.agent.api_allowed_users.empty()) {
    std::vector<unsigned> uids;
    for (const auto& u : config_.agent.api_allowed_users) {
      if (u.find_first_not_of("0123456789") == std::string::npos) {
        if (u.size() > 9) {
          error = "agent.api_allowed_users: uid '" + u + "' is out of range";
          return false;
        }
        uids.push_back(static_cast<unsigned>(std::stoul(u)));
        continue;
      }
      passwd pw{};
      passwd* found = nullptr;
      std::vector<char> buf(16384);
      if (::getpwnam_r(u.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) {
        error = "agent.api_allowed_users: no user '" + u + "' on this host";
        return false;
      }
      uids.push_back(found->pw_uid);
    }
    http_->set_loopback_uids(std::move(uids));
    if (!api::is_loopback_host(addr.host)) {
      core::log::warn("agent.api_allowed_users applies on a loopback listen address only; on {} the "
                   "read API needs agent.api_token_file",
                   config_.agent.listen);
    }
  }
  if (config_.agent.api_token_file.empty() && http_->read_api_needs_token()) {
    core::log::warn("listening on {} (not loopback) without agent.api_token_file: the read API "
                 "(/api/v1/streams, findings, detectors, events) answers 403; /metrics, /healthz and "
                 "the webhook are served",
                 config_.agent.listen);
  }
  register_metrics();
  register_routes();
  return run(error);
}

void Agent::build_pipeline() {
  ingest_ = std::make_unique<ingest::Ingest>(config_.ingest);
  if (config_.detectors.enabled) {
    detectors_ = std::make_unique<detectors::DetectorEngine>(config_.detectors);
    ingest_->add_sink(detectors_.get());
  }
  // Restored before the first batch: ingest resumes at its saved read positions with its stream
  // counters, and a stream that was being watched gets its reference back instead of pinning one
  // from what it sends now.
  if (!config_.agent.state_dir.empty()) {
    std::vector<core::Checkpointable*> parts{ingest_.get()};
    if (detectors_) parts.push_back(detectors_.get());
    state_ = std::make_unique<StateKeeper>(config_.agent.state_dir, config_.agent.checkpoint_interval,
                                           std::move(parts));
    state_->restore();
    ingest_->add_sink(state_.get());  // after the detectors: checkpoints what they just did
  } else {
    core::log::info("no state directory (agent.state_dir, --state-dir): read positions, counters, "
                 "references and open findings are not kept across restarts");
  }
  if (config_.performance.enabled) {
    // Its pending tables are files of the state directory that it maps itself (a JSON document
    // per checkpoint cannot keep millions of entries); reopened here, before the first batch.
    performance_ = std::make_unique<performance::PerformanceEngine>(config_.performance,
                                                                     config_.agent.state_dir);
    ingest_->add_sink(performance_.get());
    performance_->set_input_drift_source(
        [this](const std::string& predictions, const std::vector<std::string>& inputs) {
          return input_drift(predictions, inputs);
        });
  }
  if (config_.retention.enabled) {
    // Bucket files of the state directory, reopened here (torn tails cut) before the first batch.
    retention_ = std::make_unique<retention::RetentionStore>(config_.retention,
                                                              config_.agent.state_dir);
    ingest_->add_sink(retention_.get());
  }
  ingest_->set_producer_observer(this);
}

void Agent::build_system_events() {
  correlator_ = std::make_unique<correlator::Correlator>();
#ifdef MLTAP_HAVE_BPF
  if (config_.ebpf.enabled) {
    tracer_ = std::make_unique<bpf::Tracer>(config_.ebpf);
    tracer_->start([this](const core::SystemEvent& e) { correlator_->add_event(e); });
  }
#else
  if (config_.ebpf.enabled)
    core::log::warn("built without eBPF (MLTAP_BUILD_BPF=OFF): no system events");
#endif
}

// Reactions act on producers only through the ingest layer's ControlPlane; the webhook hands
// them alerts as an AlertSink.
void Agent::build_reactions() {
  reactions_ = std::make_unique<reactions::ReactionEngine>(config_.reactions, *ingest_,
                                                           snapshot_providers());
  if (config_.webhook.enabled) {
    webhook_ = std::make_unique<webhook::WebhookReceiver>(
        config_.webhook, webhook::load_bearer_token(config_.webhook.token_file), *reactions_);
  }
}

void Agent::build_alertmanager_push(const api::ListenAddress& listen) {
  if (!config_.alertmanager.enabled) return;
  auto am = config_.alertmanager;
  if (am.external_url.empty()) {
    const std::string host =
        listen.host == "0.0.0.0" || listen.host.empty() ? "127.0.0.1" : listen.host;
    am.external_url = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                      ":" + std::to_string(listen.port);
  }
  pusher_ = std::make_unique<alertmanager::AlertmanagerPusher>(
      am, [this] { return pushable_findings(); }, api::http_post);
}

// What an incident bundle holds besides the raw records.
reactions::SnapshotProviders Agent::snapshot_providers() {
  reactions::SnapshotProviders providers;
  providers.timeline = [this](const std::string& stream, const core::AlertEvent&) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : correlator_->events_for(producers_of(stream), 0))
      out.push_back(api::to_json(e));
    return out;
  };
  providers.detector_state = [this](const std::string& stream, const core::AlertEvent&) {
    if (!detectors_) return nlohmann::json(nullptr);
    for (const auto& st : detectors_->snapshot()->streams) {
      if (st->name == stream) return api::to_json(*st);
    }
    return nlohmann::json(nullptr);
  };
  providers.finding = [this](const std::string& stream, const core::AlertEvent&) {
    nlohmann::json out = nlohmann::json::array();
    if (!detectors_) return out;
    for (const auto& f : findings_view()->open_findings) {
      if (f.stream == stream) out.push_back(api::to_json(f));
    }
    return out;
  };
  // The stream's retained samples of the last 10 minutes (at most 10,000 rows): the context
  // before the alert that the ring may no longer hold, with trace ids for `mltap trace`.
  providers.retained = [this](const std::string& stream, const core::AlertEvent&) {
    if (!retention_) return nlohmann::json(nullptr);
    constexpr std::uint64_t kSpanNs = 600ull * 1'000'000'000;
    const std::uint64_t now = core::unix_now_ns();
    return api::retained_json(*retention_, stream, now - std::min(now, kSpanNs), ~0ull, 10'000);
  };
  return providers;
}

void Agent::register_metrics() {
  http_->add_collectable(
      std::make_shared<metrics::IngestCollector>([this] { return ingest_->snapshot(); }, kVersion));
  if (performance_) {
    http_->add_collectable(std::make_shared<metrics::PerformanceCollector>(
        [this] { return performance_->snapshot(); }));
  }
  if (detectors_) {
    http_->add_collectable(
        std::make_shared<metrics::DetectorCollector>([this] { return findings_view(); }));
  }
  http_->add_collectable(std::make_shared<metrics::EbpfCollector>([this] {
#ifdef MLTAP_HAVE_BPF
    if (tracer_) return tracer_->stats();
#endif
    return core::TracerStats{};
  }));
  if (pusher_) {
    http_->add_collectable(
        std::make_shared<metrics::AlertmanagerPushCollector>([this] { return pusher_->counts(); }));
  }
  if (retention_) {
    http_->add_collectable(std::make_shared<metrics::RetentionCollector>(
        [this] { return retention_->stats(); }));
  }
  if (state_) {
    http_->add_collectable(std::make_shared<metrics::StateCollector>([this] { return state_->counts(); }));
  }
  metrics::ReactionCollector::RequestsSource requests;
  if (webhook_) requests = [this] { return webhook_->requests_by_code(); };
  http_->add_collectable(std::make_shared<metrics::ReactionCollector>(
      [this]() -> const core::ReactionCounters& { return reactions_->counters(); },
      std::move(requests)));
}

void Agent::register_routes() {
  api::AgentRoutes routes;
  routes.streams = [this](bool fresh) {
    return fresh ? ingest_->fresh_snapshot(std::chrono::milliseconds(2000)) : ingest_->snapshot();
  };
  if (detectors_) routes.detectors = [this] { return findings_view(); };
  routes.related = [this](const core::Finding& f) {
    return correlator_->related(f, producers_of(f.stream));
  };
  // The timeline of a stream's producers with each finding's related events (mltap explain).
  routes.events.correlator = correlator_.get();
  routes.events.producers_of_stream = [this](const std::string& stream) {
    return producers_of(stream);
  };
  routes.events.findings_of_stream = [this](const std::string& stream) {
    return findings_of(stream);
  };
  if (performance_) routes.performance = [this] { return performance_->snapshot(); };
  routes.webhook = webhook_.get();
  api::register_routes(*http_, std::move(routes));
  register_retention_routes();
}

// trace, review, flag. Review measures abnormality against the detectors' reference of each
// feature (pinned or from a file) when they have one, read from their published snapshot.
void Agent::register_retention_routes() {
  api::RetentionApi api;
  api.store = retention_.get();
  if (detectors_) {
    api.reference = [this](const std::string& stream, const std::string& feature,
                           std::size_t column) -> std::optional<retention::FeatureReference> {
      const auto snap = detectors_->snapshot();
      if (!snap) return std::nullopt;
      for (const auto& st : snap->streams) {
        if (st->name != stream || st->reference == core::ReferenceSource::pending) continue;
        const auto& features = *st->features;
        const core::FeatureResult* f = nullptr;
        for (const auto& cand : features) {
          if (cand.name == feature) f = &cand;
        }
        if (!f && column < features.size()) f = &features[column];
        if (!f || !std::isfinite(f->ref_mean) || !std::isfinite(f->ref_sd) || f->ref_sd <= 0)
          return std::nullopt;
        return retention::FeatureReference{
            f->ref_mean, f->ref_sd,
            "detectors (" + std::string(core::reference_source_name(st->reference)) + ")"};
      }
      return std::nullopt;
    };
  }
  // The performance section's word on a predictions stream wins over its producer's.
  api.review_defaults = [this](retention::ReviewRequest& rq) {
    rq.threshold = config_.performance.threshold;
    const auto it = config_.performance.streams.find(rq.stream);
    if (it == config_.performance.streams.end()) return;
    rq.labels_stream = it->second.labels_stream;
    rq.task = it->second.task;
    rq.slice_column = it->second.slice_column;
  };
  api.webhook = webhook_.get();
  api::register_retention_routes(*http_, std::move(api));
}

bool Agent::run(std::string& error) {
  if (state_) state_->start();
  ingest_->start();
  reactions_->start();
  if (!http_->start(error)) {
    reactions_->stop();
    ingest_->stop();
    return false;
  }
  if (pusher_) pusher_->start();
  housekeeping_ = std::thread([this] { housekeeping(); });
  if (config_.agent.drop_capabilities) drop_capabilities();
  core::log::info("mltapd {} watching namespace '{}' in {}", kVersion, config_.ingest.ns,
               config_.ingest.shm_dir);
  return true;
}

void Agent::stop() {
  if (http_) http_->stop();
  {
    std::lock_guard<std::mutex> lock(watcher_mutex_);
    stopping_ = true;
  }
  watcher_cv_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (pusher_) pusher_->stop();
  if (reactions_) reactions_->stop();  // undoes flags and boosts while ingest still runs
  if (ingest_) ingest_->stop();
#ifdef MLTAP_HAVE_BPF
  if (tracer_) tracer_->stop();
#endif
  if (detectors_) detectors_->publish_now();
  if (performance_) performance_->publish_now();
  if (state_) state_->stop();  // the ingest thread has stopped: a last checkpoint from here
}

std::vector<alertmanager::PushableFinding> Agent::pushable_findings() const {
  std::vector<alertmanager::PushableFinding> out;
  if (!detectors_) return out;
  for (const auto& f : findings_view()->open_findings) {
    alertmanager::PushableFinding p{f, {}, {}};
    for (const auto& r : correlator_->related(f, producers_of(f.stream))) {
      auto& list = r.after_onset ? p.after_onset_events : p.related_events;
      if (list.size() < 3) list.push_back(r.why);
    }
    out.push_back(std::move(p));
  }
  return out;
}

// The detectors' snapshot with the performance component's findings added: one view of every
// finding for the metrics, the API, Alertmanager and `mltap explain`. Performance finding ids
// start at 2^48 (agent/performance/findings.hpp), apart from the detectors'.
std::shared_ptr<const core::DetectorSnapshot> Agent::findings_view() const {
  auto d = detectors_->snapshot();
  if (!performance_ || !d) return d;
  const auto p = performance_->snapshot();
  if (!p || (p->open_findings.empty() && p->closed_findings.empty())) return d;
  auto merged = std::make_shared<core::DetectorSnapshot>(*d);
  merged->open_findings.insert(merged->open_findings.end(), p->open_findings.begin(), p->open_findings.end());
  merged->closed_findings.insert(merged->closed_findings.end(), p->closed_findings.begin(), p->closed_findings.end());
  return merged;
}

// The drift state of a predictions stream's inputs (docs/performance.md, "Findings"): the
// configured input streams, or the features and embeddings streams of its component.
std::vector<core::InputDrift> Agent::input_drift(const std::string& predictions,
                                                 const std::vector<std::string>& inputs) const {
  std::vector<core::InputDrift> out;
  if (!detectors_) return out;
  const auto snap = detectors_->snapshot();
  if (!snap) return out;
  std::string component;
  for (const auto& st : snap->streams) {
    if (st->name == predictions) component = st->component;
  }
  for (const auto& st : snap->streams) {
    const bool wanted = inputs.empty()
                            ? !component.empty() && st->component == component && st->name != predictions &&
                                  (st->layout == "features" || st->layout == "embeddings")
                            : std::find(inputs.begin(), inputs.end(), st->name) != inputs.end();
    if (!wanted) continue;
    core::InputDrift in;
    in.stream = st->name;
    in.analyzed = st->reference != core::ReferenceSource::pending && st->windows_closed > 0;
    in.features_analyzed = st->features_analyzed;
    in.drifted_features = st->drifted_features;
    for (const auto& f : *st->features) {
      if (f.drifted && in.drifted.size() < 8) in.drifted.push_back(f.name);
    }
    for (const auto& f : snap->open_findings) {
      if (f.stream == st->name && f.kind == core::FindingKind::embedding_drift) in.multivariate_drift = true;
    }
    out.push_back(std::move(in));
  }
  return out;
}

std::vector<core::ProducerId> Agent::producers_of(const std::string& stream) const {
  std::vector<core::ProducerId> out;
  for (const auto& s : ingest_->snapshot()->streams) {
    if (s.info.name != stream) continue;
    for (const auto& p : s.producers) out.push_back(p.id);
  }
  return out;
}

// The stream's findings, open and recently closed; nullopt when neither ingest nor the detectors
// know the stream.
std::optional<std::vector<core::Finding>> Agent::findings_of(const std::string& stream) const {
  std::vector<core::Finding> out;
  bool known = false;
  for (const auto& st : ingest_->snapshot()->streams) known = known || st.info.name == stream;
  if (detectors_) {
    const auto snap = findings_view();
    for (const auto* list : {&snap->open_findings, &snap->closed_findings}) {
      for (const auto& f : *list) {
        if (f.stream == stream) out.push_back(f);
      }
    }
  }
  if (!known && out.empty()) return std::nullopt;
  return out;
}

// On the ingest thread, when a producer's ring is first seen.
void Agent::on_producer_attached(const core::SegmentIdentity& p) {
  correlator_->note_producer(p.stream, p.component, p.producer);
  ++open_segments_[p.producer];
#ifdef MLTAP_HAVE_BPF
  if (!tracer_) return;
  const auto r = tracer_->track(p.producer.pid, p.producer.start_ticks, p.component);
  if (r != bpf::TrackResult::tracked && r != bpf::TrackResult::already_tracked) {
    core::log::debug("producer pid {} of '{}' not tracked: {}", p.producer.pid, p.stream,
                  bpf::track_result_name(r));
  }
  watch_artifacts(p);
#endif
}

// The files the producer declared it depends on: watch their directories (bounded).
void Agent::watch_artifacts(const core::SegmentIdentity& p) {
#ifdef MLTAP_HAVE_BPF
  for (const auto& path : p.artifacts) {
    struct stat st {};
    std::string dir = path;
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      dir = path.substr(0, path.rfind('/'));
    if (dir.empty()) dir = "/";
    if (watched_dirs_.count(dir) || watched_dirs_.size() >= 64) continue;
    if (tracer_->watch_directory(dir)) {
      watched_dirs_.insert(dir);
      core::log::info("watching {} for changes to the artifacts of stream '{}'", dir, p.stream);
    } else {
      core::log::warn("cannot watch {} (artifact of stream '{}')", dir, p.stream);
    }
  }
#else
  (void)p;
#endif
}

void Agent::on_producer_gone(const core::SegmentIdentity& p, core::ProducerState state) {
  auto it = open_segments_.find(p.producer);
  if (it == open_segments_.end()) return;
  if (--it->second > 0) return;  // still writes other streams
  open_segments_.erase(it);
#ifdef MLTAP_HAVE_BPF
  // A process that closed its last stream may live on: stop tracing it. A dead one already
  // left the kernel's set.
  if (tracer_ && state == core::ProducerState::closed)
    tracer_->untrack(p.producer.pid, p.producer.start_ticks);
#else
  (void)state;
#endif
}

// ebpf_exporter's rule: keep only what the running agent still needs.
void Agent::drop_capabilities() {
  bpf::CapabilityDropOptions opts;
  opts.keep = config_.agent.keep_capabilities;
#ifdef MLTAP_HAVE_BPF
  if (tracer_) {
    for (auto& c : tracer_->capabilities_needed_after_start()) opts.keep.push_back(std::move(c));
  }
#endif
  const auto r = bpf::drop_capabilities(opts);
  if (!r.ok) {
    core::log::warn("could not drop capabilities: {}", r.error);
    return;
  }
  std::string kept;
  for (const auto& c : r.kept) kept += (kept.empty() ? "" : ", ") + c;
  core::log::info("capabilities dropped in {} threads; kept: {}", r.threads,
               kept.empty() ? "none" : kept);
}

void Agent::housekeeping() {
  std::vector<std::uint64_t> last;
  auto last_trim = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(watcher_mutex_);
  while (!stopping_) {
    watcher_cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (stopping_) continue;
    // glibc keeps what a thread freed in that thread's arena (mltapd has a dozen: ingest,
    // reactions, HTTP workers...), so each burst of transient memory (an incident bundle's
    // records and JSON, a /metrics page, a reference rebuild) leaves RSS at every arena's
    // high-water mark while the live heap stays small: the soak (bench/soak/soak.py) measured
    // 35 MB of arenas holding 4 MB in use, anonymous RSS rising ~5 MiB per round of reactions.
    // Giving the free pages back every few seconds costs a walk of the arenas (~1 ms).
    const auto now = std::chrono::steady_clock::now();
    if (now - last_trim >= kHeapTrimInterval) {
      last_trim = now;
      ::malloc_trim(0);
    }
    if (!pusher_ || !detectors_) continue;
    // Tells the pusher as soon as the set of open findings changes.
    std::vector<std::uint64_t> ids;
    for (const auto& f : findings_view()->open_findings) ids.push_back(f.id);
    std::sort(ids.begin(), ids.end());
    if (ids != last) {
      last = std::move(ids);
      pusher_->notify();
    }
  }
}

Agent::ReloadResult Agent::reload(const AgentConfig& next) {
  ReloadResult r;
  // The detectors take a new section and re-read every reference file (a profile rebuilt in
  // place changes nothing in the YAML). A bad file throws here, before anything changed: the
  // caller keeps the running configuration.
  if (detectors_) {
    const auto report = detectors_->reload(next.detectors, std::chrono::seconds(5));
    if (!report) {
      r.applied.push_back("detectors: staged; the ingest thread applies it at its next turn");
    } else {
      for (const auto& line : *report) r.applied.push_back(line);
    }
    config_.detectors = next.detectors;
    config_.sections["detectors"] = next.sections.count("detectors") ? next.sections.at("detectors") : std::string();
  }
  if (next.agent.log_level != config_.agent.log_level) {
    const auto level = spdlog::level::from_str(next.agent.log_level);
    spdlog::set_level(level);
    r.applied.push_back("agent.log_level: " + config_.agent.log_level + " -> " +
                        next.agent.log_level);
    config_.agent.log_level = next.agent.log_level;
  }
  // Everything else is wired into running components (threads, probes, sockets, reactions'
  // undo state): changing it in place could lose or double-count data, so it waits for a
  // restart, and the agent says so.
  for (const char* name : kConfigSections) {
    const auto a = config_.sections.find(name);
    const auto b = next.sections.find(name);
    const std::string before = a == config_.sections.end() ? std::string() : a->second;
    const std::string after = b == next.sections.end() ? std::string() : b->second;
    if (before == after) continue;
    if (std::string_view(name) == "agent") {
      AgentSettings x = config_.agent;
      x.log_level = next.agent.log_level;
      if (x == next.agent) continue;  // only the log level changed, applied above
    }
    r.need_restart.emplace_back(name);
  }
  // config_.sections stays the running configuration's: a later reload still names what waits.
  return r;
}

std::uint64_t Agent::ingest_progress() const {
  const auto snap = ingest_->snapshot();
  return snap ? snap->polls : 0;
}

std::string Agent::status_line() const {
  std::size_t streams = 0, producers = 0, findings = 0;
  if (const auto snap = ingest_->snapshot()) {
    streams = snap->streams.size();
    for (const auto& st : snap->streams) producers += st.live_producers;
  }
  if (detectors_) {
    if (const auto snap = findings_view()) findings = snap->open_findings.size();
  }
  return std::to_string(streams) + (streams == 1 ? " stream, " : " streams, ") +
         std::to_string(producers) + (producers == 1 ? " live producer, " : " live producers, ") +
         std::to_string(findings) + (findings == 1 ? " open finding" : " open findings");
}

int Agent::http_port() const noexcept { return http_ ? http_->bound_port() : 0; }

}  // namespace mltap::mltapd
