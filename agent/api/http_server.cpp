#include "agent/api/http_server.hpp"

#include <httplib.h>

#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

namespace mltap::api {

struct HttpServer::Impl {
  ListenAddress address;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  mutable std::mutex mutex;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables;
};

HttpServer::HttpServer(ListenAddress address) : impl_(std::make_unique<Impl>()) {
  impl_->address = std::move(address);
  auto& server = impl_->server;
  server.set_read_timeout(5, 0);
  server.set_write_timeout(5, 0);
  server.set_keep_alive_max_count(100);
  server.set_payload_max_length(1 << 20);
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
}

HttpServer::~HttpServer() { stop(); }

httplib::Server& HttpServer::native() noexcept { return impl_->server; }

int HttpServer::bound_port() const noexcept { return impl_->port; }

void HttpServer::add_collectable(std::shared_ptr<prometheus::Collectable> c) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->collectables.push_back(std::move(c));
}

std::string HttpServer::render_metrics() const {
  std::vector<prometheus::MetricFamily> families;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    for (const auto& c : impl_->collectables) {
      auto f = c->Collect();
      families.insert(families.end(), std::make_move_iterator(f.begin()),
                      std::make_move_iterator(f.end()));
    }
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

bool HttpServer::start(std::string& error) {
  Impl& m = *impl_;
  if (m.address.port == 0) {
    m.port = m.server.bind_to_any_port(m.address.host);
    if (m.port <= 0) {
      error = "cannot bind " + m.address.host + ":0";
      return false;
    }
  } else {
    if (!m.server.bind_to_port(m.address.host, m.address.port)) {
      error = "cannot listen on " + m.address.host + ":" + std::to_string(m.address.port) +
              " (in use, or not an address of this host)";
      return false;
    }
    m.port = m.address.port;
  }
  m.thread = std::thread([&m] { m.server.listen_after_bind(); });
  spdlog::info("serving http://{}:{}/metrics", m.address.host, m.port);
  return true;
}

void HttpServer::stop() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace mltap::api
