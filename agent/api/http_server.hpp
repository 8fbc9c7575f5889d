// mltapd's one HTTP listener: /metrics (every registered prometheus::Collectable), the JSON API
// and the webhook. Components register their own routes on server(); the listener runs on its own
// thread pool so a slow client never touches ingest.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <prometheus/collectable.h>

namespace mltap::api {

struct ListenAddress {
  std::string host;
  int port = 0;  // 0 = any free port (tests)
};
// "127.0.0.1:9645", "[::1]:9645", ":9645" (all interfaces). Nullopt-like: returns false on error.
bool parse_listen_address(const std::string& text, ListenAddress& out, std::string& error);

class HttpServer {
 public:
  explicit HttpServer(ListenAddress address);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  httplib::Server& server() noexcept { return server_; }
  void add_collectable(std::shared_ptr<prometheus::Collectable> c);
  // Renders every collectable in the Prometheus text format.
  std::string render_metrics() const;

  // Binds and starts serving on a background thread; false with `error` if the bind failed.
  bool start(std::string& error);
  void stop();
  int bound_port() const noexcept { return port_; }

 private:
  ListenAddress address_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
};

}  // namespace mltap::api
