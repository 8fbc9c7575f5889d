#include "mltapd/agent.hpp"

#include <sys/stat.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "api/streams_json.hpp"
#include "correlator/event_json.hpp"
#include "correlator/http_routes.hpp"
#include "mltap/ebpf/capabilities.hpp"
#include "prometheus/ebpf_metrics.hpp"
#ifdef MLTAP_HAVE_BPF
#include "mltap/ebpf/tracer.hpp"
#endif
#include "detectors/json.hpp"
#include "detectors/profile.hpp"
#include "prometheus/detector_metrics.hpp"
#include "webhook/reaction_metrics.hpp"
#include "prometheus/ingest_metrics.hpp"

namespace mltap::agent {

Agent::Agent(AgentConfig config) : config_(std::move(config)) {}

Agent::~Agent() { stop(); }

bool Agent::start(std::string& error) {
  api::ListenAddress addr;
  if (!api::parse_listen_address(config_.agent.listen, addr, error)) return false;
  ingest_ = std::make_unique<ingest::Ingest>(config_.ingest);
  if (config_.detectors.enabled) {
    try {
      detectors_ = std::make_unique<detect::DetectorEngine>(config_.detectors);
    } catch (const std::exception& e) {  // a configured reference profile that cannot be loaded
      error = e.what();
      return false;
    }
    ingest_->add_sink(detectors_.get());
  }
  // System events: the tracer feeds the correlator; producers are tracked as they appear.
  correlator_ = std::make_unique<correlate::Correlator>();
#ifdef MLTAP_HAVE_BPF
  if (config_.ebpf.enabled) {
    tracer_ = std::make_unique<ebpf::Tracer>(config_.ebpf);
    tracer_->start([this](const correlate::SystemEvent& e) { correlator_->add_event(e); });
  }
#else
  if (config_.ebpf.enabled) spdlog::warn("built without eBPF (MLTAP_BUILD_BPF=OFF): no system events");
#endif
  ingest_->set_producer_observer(this);
  http_ = std::make_unique<api::HttpServer>(addr);
  http_->add_collectable(std::make_shared<prom::IngestCollector>(*ingest_, kVersion));
  if (detectors_) http_->add_collectable(std::make_shared<prom::DetectorCollector>(*detectors_));

  auto& srv = http_->server();
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  srv.Get("/api/v1/streams", [this](const httplib::Request& req, httplib::Response& res) {
    auto snap = req.has_param("fresh") ? ingest_->fresh_snapshot(std::chrono::milliseconds(2000))
                                       : ingest_->snapshot();
    res.set_content(api::streams_to_json(*snap).dump(), "application/json");
  });

  // Reactions act on producers only through the ingest layer's ControlPlane.
  http_->add_collectable(std::make_shared<prom::EbpfCollector>([this] {
#ifdef MLTAP_HAVE_BPF
    if (tracer_) return tracer_->stats();
#endif
    return ebpf::TracerStats{};
  }));
  react::SnapshotProviders providers;
  providers.timeline = [this](const std::string& stream, const react::AlertEvent&) {
    const auto producers = producers_of(stream);
    nlohmann::json out = nlohmann::json::array();
    (void)stream;
    for (const auto& e : correlator_->events_for(producers, 0)) out.push_back(correlate::to_json(e));
    return out;
  };
  providers.detector_state = [this](const std::string& stream, const react::AlertEvent&) {
    if (!detectors_) return nlohmann::json(nullptr);
    for (const auto& st : detectors_->snapshot()->streams) {
      if (st->name == stream) return detect::to_json(*st);
    }
    return nlohmann::json(nullptr);
  };
  providers.finding = [this](const std::string& stream, const react::AlertEvent&) {
    nlohmann::json out = nlohmann::json::array();
    if (!detectors_) return out;
    for (const auto& f : detectors_->snapshot()->open_findings) {
      if (f.stream == stream) out.push_back(detect::to_json(f));
    }
    return out;
  };
  try {
    reactions_ = std::make_unique<react::ReactionEngine>(config_.reactions, *ingest_, providers);
    if (config_.webhook.enabled) {
      webhook_ = std::make_unique<webhook::WebhookReceiver>(
          config_.webhook, webhook::load_bearer_token(config_.webhook.token_file), *reactions_);
      webhook::register_webhook_routes(srv, *webhook_);
    }
    if (config_.alertmanager.enabled) {
      auto am = config_.alertmanager;
      if (am.external_url.empty()) {
        const std::string host = addr.host == "0.0.0.0" || addr.host.empty() ? "127.0.0.1" : addr.host;
        am.external_url = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                          ":" + std::to_string(addr.port);
      }
      pusher_ = std::make_unique<alertmanager::AlertmanagerPusher>(am, [this] { return pushable_findings(); });
      http_->add_collectable(std::make_shared<alertmanager::AlertmanagerPushCollector>(*pusher_));
    }
  } catch (const std::exception& e) {  // unusable token file, Alertmanager URL, exec path...
    error = e.what();
    return false;
  }
  http_->add_collectable(std::make_shared<webhook::ReactionCollector>(*reactions_, webhook_.get()));

  // Findings: open ones and the recently closed, newest first; one by id.
  srv.Get("/api/v1/findings", [this](const httplib::Request&, httplib::Response& res) {
    nlohmann::json open = nlohmann::json::array(), closed = nlohmann::json::array();
    if (detectors_) {
      const auto snap = detectors_->snapshot();
      for (const auto& f : snap->open_findings) open.push_back(finding_json(f));
      for (const auto& f : snap->closed_findings) closed.push_back(finding_json(f));
    }
    res.set_content(nlohmann::json{{"open", open}, {"closed", closed}}.dump(), "application/json");
  });
  srv.Get(R"(/api/v1/findings/(\d{1,19}))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::uint64_t id = std::stoull(req.matches[1]);
    if (detectors_) {
      const auto snap = detectors_->snapshot();
      for (const auto* list : {&snap->open_findings, &snap->closed_findings}) {
        for (const auto& f : *list) {
          if (f.id == id) {
            res.set_content(finding_json(f).dump(), "application/json");
            return;
          }
        }
      }
    }
    res.status = 404;
    res.set_content(nlohmann::json{{"error", "no finding " + std::to_string(id)}}.dump(), "application/json");
  });
  // The timeline of a stream's producers with each finding's related events (mltap explain).
  correlate::EventsApi events;
  events.correlator = correlator_.get();
  events.producers_of_stream = [this](const std::string& stream) { return producers_of(stream); };
  events.findings_of_stream = [this](const std::string& stream) -> std::optional<std::vector<detect::Finding>> {
    std::vector<detect::Finding> out;
    bool known = false;
    for (const auto& st : ingest_->snapshot()->streams) known = known || st.info.name == stream;
    if (detectors_) {
      const auto snap = detectors_->snapshot();
      for (const auto* list : {&snap->open_findings, &snap->closed_findings}) {
        for (const auto& f : *list) {
          if (f.stream == stream) out.push_back(f);
        }
      }
    }
    if (!known && out.empty()) return std::nullopt;
    return out;
  };
  correlate::register_events_routes(srv, events);

  // Detector state per stream and feature (scores, decisions, quality ratios).
  srv.Get("/api/v1/detectors", [this](const httplib::Request&, httplib::Response& res) {
    if (!detectors_) {
      res.set_content(R"({"enabled": false})", "application/json");
      return;
    }
    res.set_content(detect::to_json(*detectors_->snapshot()).dump(), "application/json");
  });

  ingest_->start();
  reactions_->start();
  if (!http_->start(error)) {
    reactions_->stop();
    ingest_->stop();
    return false;
  }
  if (pusher_) {
    pusher_->start();
    findings_watcher_ = std::thread([this] { watch_findings(); });
  }
  if (config_.agent.drop_capabilities) drop_capabilities();
  spdlog::info("mltapd {} watching namespace '{}' in {}", kVersion, config_.ingest.ns,
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
  if (findings_watcher_.joinable()) findings_watcher_.join();
  if (pusher_) pusher_->stop();
  if (reactions_) reactions_->stop();  // undoes flags and boosts while ingest still runs
  if (ingest_) ingest_->stop();
#ifdef MLTAP_HAVE_BPF
  if (tracer_) tracer_->stop();
#endif
  if (detectors_) detectors_->publish_now();
}

std::vector<alertmanager::PushableFinding> Agent::pushable_findings() const {
  std::vector<alertmanager::PushableFinding> out;
  if (!detectors_) return out;
  for (const auto& f : detectors_->snapshot()->open_findings) {
    alertmanager::PushableFinding p{f, {}};
    for (const auto& r : correlator_->related(f, producers_of(f.stream))) {
      if (p.related_events.size() >= 3) break;
      p.related_events.push_back(correlate::describe(r.event));
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<ingest::ProducerId> Agent::producers_of(const std::string& stream) const {
  std::vector<ingest::ProducerId> out;
  for (const auto& s : ingest_->snapshot()->streams) {
    if (s.info.name != stream) continue;
    for (const auto& p : s.producers) out.push_back(p.id);
  }
  return out;
}

nlohmann::json Agent::finding_json(const detect::Finding& f) const {
  nlohmann::json j = detect::to_json(f);
  j["related"] = correlate::related_json(correlator_->related(f, producers_of(f.stream)));
  return j;
}

// On the ingest thread, when a producer's ring is first seen.
void Agent::on_producer_attached(const ingest::SegmentIdentity& p) {
  correlator_->note_producer(p.stream, p.component, p.producer);
  ++open_segments_[p.producer];
#ifdef MLTAP_HAVE_BPF
  if (!tracer_) return;
  const auto r = tracer_->track(p.producer.pid, p.producer.start_ticks, p.component);
  if (r != ebpf::TrackResult::tracked && r != ebpf::TrackResult::already_tracked) {
    spdlog::debug("producer pid {} of '{}' not tracked: {}", p.producer.pid, p.stream,
                  ebpf::track_result_name(r));
  }
  // The files the producer declared it depends on: watch their directories (bounded).
  for (const auto& path : p.artifacts) {
    struct stat st {};
    std::string dir = path;
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) dir = path.substr(0, path.rfind('/'));
    if (dir.empty()) dir = "/";
    if (watched_dirs_.count(dir) || watched_dirs_.size() >= 64) continue;
    if (tracer_->watch_directory(dir)) {
      watched_dirs_.insert(dir);
      spdlog::info("watching {} for changes to the artifacts of stream '{}'", dir, p.stream);
    } else {
      spdlog::warn("cannot watch {} (artifact of stream '{}')", dir, p.stream);
    }
  }
#endif
}

void Agent::on_producer_gone(const ingest::SegmentIdentity& p, ingest::ProducerState state) {
  auto it = open_segments_.find(p.producer);
  if (it == open_segments_.end()) return;
  if (--it->second > 0) return;  // still writes other streams
  open_segments_.erase(it);
#ifdef MLTAP_HAVE_BPF
  // A process that closed its last stream may live on: stop tracing it. A dead one already
  // left the kernel's set.
  if (tracer_ && state == ingest::ProducerState::closed) tracer_->untrack(p.producer.pid, p.producer.start_ticks);
#else
  (void)state;
#endif
}

// ebpf_exporter's rule: keep only what the running agent still needs.
void Agent::drop_capabilities() {
  ebpf::CapabilityDropOptions opts;
  opts.keep = config_.agent.keep_capabilities;
#ifdef MLTAP_HAVE_BPF
  if (tracer_) {
    for (auto& c : tracer_->capabilities_needed_after_start()) opts.keep.push_back(std::move(c));
  }
#endif
  const auto r = ebpf::drop_capabilities(opts);
  if (!r.ok) {
    spdlog::warn("could not drop capabilities: {}", r.error);
    return;
  }
  std::string kept;
  for (const auto& c : r.kept) kept += (kept.empty() ? "" : ", ") + c;
  spdlog::info("capabilities dropped in {} threads; kept: {}", r.threads, kept.empty() ? "none" : kept);
}

void Agent::watch_findings() {
  std::vector<std::uint64_t> last;
  std::unique_lock<std::mutex> lock(watcher_mutex_);
  while (!stopping_) {
    watcher_cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (stopping_ || !detectors_) continue;
    std::vector<std::uint64_t> ids;
    for (const auto& f : detectors_->snapshot()->open_findings) ids.push_back(f.id);
    std::sort(ids.begin(), ids.end());
    if (ids != last) {
      last = std::move(ids);
      pusher_->notify();
    }
  }
}

int Agent::http_port() const noexcept { return http_ ? http_->bound_port() : 0; }

}  // namespace mltap::agent
