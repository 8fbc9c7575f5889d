#include "agent/api/http_client.hpp"

#include <httplib.h>

namespace mltap::api {

alertmanager::HttpReply http_post(const std::string& scheme_host_port, const std::string& path,
                                  const std::vector<std::pair<std::string, std::string>>& headers,
                                  const std::string& json_body, std::chrono::nanoseconds timeout) {
  httplib::Client client(scheme_host_port);
  const auto t = std::chrono::duration_cast<std::chrono::microseconds>(timeout);
  client.set_connection_timeout(t);
  client.set_read_timeout(t);
  client.set_write_timeout(t);
  httplib::Headers h;
  for (const auto& [k, v] : headers) h.emplace(k, v);
  alertmanager::HttpReply reply;
  auto res = client.Post(path, h, json_body, "application/json");
  if (!res) {
    reply.error = httplib::to_string(res.error());
    return reply;
  }
  reply.status = res->status;
  reply.body = res->body;
  return reply;
}

}  // namespace mltap::api
