// mltapd's one HTTP listener: /metrics (every registered prometheus::Collectable) and the routes
// of agent/api (routes.hpp). Runs on its own thread pool so a slow client never touches ingest.
// cpp-httplib stays in agent/api's .cpp files: routes are registered through native().
#pragma once

#include <memory>
#include <string>

#include "agent/api/listen_address.hpp"

namespace httplib {
class Server;
}
namespace prometheus {
class Collectable;
}

namespace mltap::api {

class HttpServer {
 public:
  explicit HttpServer(ListenAddress address);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void add_collectable(std::shared_ptr<prometheus::Collectable> c);
  // Renders every collectable in the Prometheus text format.
  std::string render_metrics() const;

  // Binds and starts serving on a background thread; false with `error` if the bind failed.
  bool start(std::string& error);
  void stop();
  int bound_port() const noexcept;

  // The server routes are registered on (agent/api only).
  httplib::Server& native() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mltap::api
