// mltapd assembled: ingest -> sinks (detectors) -> exporters, system events into the correlator,
// reactions acting back through the ingest layer's ControlPlane, the HTTP API in front. The
// composition root: it constructs the components and wires their callbacks; what each one does
// lives in its own library.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/api/http_server.hpp"
#include "agent/correlator/correlator.hpp"
#include "agent/detectors/engine.hpp"
#include "agent/ingest/ingest.hpp"
#include "agent/mltapd/agent_config.hpp"
#include "agent/mltapd/state_keeper.hpp"
#include "agent/performance/engine.hpp"
#include "agent/reactions/reaction_engine.hpp"
#include "agent/retention/store.hpp"
#include "exporters/alertmanager/alertmanager_pusher.hpp"
#include "exporters/webhook/webhook_receiver.hpp"

namespace mltap::bpf {
class Tracer;
}

namespace mltap::mltapd {

inline constexpr const char* kVersion = "0.1.0";

class Agent : private ingest::ProducerObserver {
 public:
  explicit Agent(AgentConfig config);
  ~Agent() override;
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Starts every component; false with `error` when the agent cannot serve (e.g. port in use).
  bool start(std::string& error);
  void stop();
  int http_port() const noexcept;

  // SIGHUP: `next` was parsed without error (the caller refuses a configuration with errors and
  // keeps this one). Applies what can change while running: agent.log_level, the whole
  // `detectors:` section and every reference file re-read (DetectorEngine::reload; a bad file
  // throws ProfileError before anything changed), and names the other sections that differ but
  // take effect only at the next start; streams, findings and counters are untouched.
  struct ReloadResult {
    std::vector<std::string> applied;       // e.g. "agent.log_level: info -> debug"
    std::vector<std::string> need_restart;  // top-level sections whose settings changed
  };
  ReloadResult reload(const AgentConfig& next);
  // Liveness for the service manager's watchdog: advances while the ingest loop turns (it also
  // drives the detectors), stays put when that thread is stuck.
  std::uint64_t ingest_progress() const;
  // One line for systemd's STATUS=: streams, live producers, open findings.
  std::string status_line() const;
  std::vector<alertmanager::PushableFinding> pushable_findings() const;

 private:
  // The wiring steps of start(), in order. Each constructs one part and connects it to the
  // parts before it; the build_* steps that can fail on configuration throw.
  void build_pipeline();       // ingest -> detectors
  void build_system_events();  // tracer -> correlator
  void build_reactions();      // webhook receiver -> reaction engine -> ControlPlane
  void build_alertmanager_push(const api::ListenAddress& listen);
  void register_metrics();       // one collector per published state
  void register_routes();        // agent/api
  void register_retention_routes();
  bool run(std::string& error);  // threads start here

  // ProducerObserver (ingest thread): the correlator and the tracer learn the producers.
  void on_producer_attached(const core::SegmentIdentity& producer) override;
  void on_producer_gone(const core::SegmentIdentity& producer, core::ProducerState state) override;
  void watch_artifacts(const core::SegmentIdentity& producer);

  std::vector<core::ProducerId> producers_of(const std::string& stream) const;
  std::shared_ptr<const core::DetectorSnapshot> findings_view() const;
  std::vector<core::InputDrift> input_drift(const std::string& predictions,
                                            const std::vector<std::string>& inputs) const;
  std::optional<std::vector<core::Finding>> findings_of(const std::string& stream) const;
  reactions::SnapshotProviders snapshot_providers();
  void drop_capabilities();
  // Tells the pusher as soon as the set of open findings changes, and returns freed heap to the
  // system every kHeapTrimInterval.
  void housekeeping();
  static constexpr std::chrono::seconds kHeapTrimInterval{5};

  AgentConfig config_;
  std::unique_ptr<ingest::Ingest> ingest_;
  std::unique_ptr<detectors::DetectorEngine> detectors_;
  std::unique_ptr<performance::PerformanceEngine> performance_;  // labels joined to predictions
  std::unique_ptr<retention::RetentionStore> retention_;  // retained samples (trace, review)
  std::unique_ptr<StateKeeper> state_;  // with agent.state_dir: the detectors' state kept there
  std::unique_ptr<reactions::ReactionEngine> reactions_;
  std::unique_ptr<correlator::Correlator> correlator_;
#ifdef MLTAP_HAVE_BPF
  std::unique_ptr<bpf::Tracer> tracer_;
#endif
  std::set<std::string> watched_dirs_;  // artifact directories handed to the file watch
  // Open segments per producer process (ingest thread only): a process writing several streams
  // stays traced until it has closed all of them.
  std::map<core::ProducerId, std::uint32_t> open_segments_;
  std::unique_ptr<webhook::WebhookReceiver> webhook_;
  std::unique_ptr<alertmanager::AlertmanagerPusher> pusher_;
  std::thread housekeeping_;
  std::mutex watcher_mutex_;
  std::condition_variable watcher_cv_;
  bool stopping_ = false;
  std::unique_ptr<api::HttpServer> http_;
};

}  // namespace mltap::mltapd
