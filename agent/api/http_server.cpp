#include "api/http_server.hpp"

#include <sstream>

#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

namespace mltap::api {

bool parse_listen_address(const std::string& text, ListenAddress& out, std::string& error) {
  std::string host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      error = "expected [ipv6]:port, got '" + text + "'";
      return false;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) {
      error = "expected host:port, got '" + text + "'";
      return false;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty()) host = "0.0.0.0";
  int p = -1;
  try {
    size_t used = 0;
    p = std::stoi(port, &used);
    if (used != port.size()) p = -1;
  } catch (...) {
    p = -1;
  }
  if (p < 0 || p > 65535) {
    error = "port must be 0..65535, got '" + port + "'";
    return false;
  }
  out.host = host;
  out.port = p;
  return true;
}

HttpServer::HttpServer(ListenAddress address) : address_(std::move(address)) {
  server_.set_read_timeout(5, 0);
  server_.set_write_timeout(5, 0);
  server_.set_keep_alive_max_count(100);
  server_.set_payload_max_length(1 << 20);
  server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::add_collectable(std::shared_ptr<prometheus::Collectable> c) {
  std::lock_guard<std::mutex> lock(mutex_);
  collectables_.push_back(std::move(c));
}

std::string HttpServer::render_metrics() const {
  std::vector<prometheus::MetricFamily> families;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& c : collectables_) {
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
  if (address_.port == 0) {
    port_ = server_.bind_to_any_port(address_.host);
    if (port_ <= 0) {
      error = "cannot bind " + address_.host + ":0";
      return false;
    }
  } else {
    if (!server_.bind_to_port(address_.host, address_.port)) {
      error = "cannot listen on " + address_.host + ":" + std::to_string(address_.port) +
              " (in use, or not an address of this host)";
      return false;
    }
    port_ = address_.port;
  }
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  spdlog::info("serving http://{}:{}/metrics", address_.host, port_);
  return true;
}

void HttpServer::stop() {
  server_.stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace mltap::api
