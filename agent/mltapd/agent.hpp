// mltapd assembled: ingest -> sinks (detectors) -> exporters, with the HTTP API in front.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <nlohmann/json.hpp>
#include <thread>

#include "api/http_server.hpp"
#include "alertmanager/alertmanager_pusher.hpp"
#include "correlator/correlator.hpp"
#include "detectors/engine.hpp"
#include "reactions/reaction_engine.hpp"
#include "webhook/webhook_receiver.hpp"
#include "ingest/ingest.hpp"
#include "mltapd/agent_config.hpp"

namespace mltap::agent {

inline constexpr const char* kVersion = "0.1.0";

#ifdef MLTAP_HAVE_BPF
}  // namespace mltap::agent
namespace mltap::ebpf {
class Tracer;
}
namespace mltap::agent {
#endif

class Agent : private ingest::ProducerObserver {
 public:
  explicit Agent(AgentConfig config);
  ~Agent();
  // Starts every component; false with `error` when the agent cannot serve (e.g. port in use).
  bool start(std::string& error);
  void stop();
  int http_port() const noexcept;
  std::vector<alertmanager::PushableFinding> pushable_findings() const;

 private:
  AgentConfig config_;
  std::unique_ptr<ingest::Ingest> ingest_;
  std::unique_ptr<detect::DetectorEngine> detectors_;
  std::unique_ptr<react::ReactionEngine> reactions_;
  std::unique_ptr<correlate::Correlator> correlator_;
#ifdef MLTAP_HAVE_BPF
  std::unique_ptr<ebpf::Tracer> tracer_;
#endif
  std::set<std::string> watched_dirs_;  // artifact directories handed to the file watch
  // Open segments per producer process (ingest thread only): a process writing several streams
  // stays traced until it has closed all of them.
  std::map<ingest::ProducerId, std::uint32_t> open_segments_;
  void on_producer_attached(const ingest::SegmentIdentity& producer) override;
  void on_producer_gone(const ingest::SegmentIdentity& producer, ingest::ProducerState state) override;
  std::vector<ingest::ProducerId> producers_of(const std::string& stream) const;
  nlohmann::json finding_json(const detect::Finding& f) const;
  void drop_capabilities();
  std::unique_ptr<webhook::WebhookReceiver> webhook_;
  std::unique_ptr<alertmanager::AlertmanagerPusher> pusher_;
  // Tells the pusher as soon as the set of open findings changes.
  void watch_findings();
  std::thread findings_watcher_;
  std::mutex watcher_mutex_;
  std::condition_variable watcher_cv_;
  bool stopping_ = false;
  std::unique_ptr<api::HttpServer> http_;
};

}  // namespace mltap::agent
