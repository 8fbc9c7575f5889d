#include "agent/cli/agent_client.hpp"

#include <cstdlib>

#include <httplib.h>

namespace mltap::cli {

std::string default_agent_url() {
  const char* v = std::getenv("MLTAP_AGENT");
  return v && *v ? v : "http://127.0.0.1:9645";
}

std::optional<nlohmann::json> get_json(const std::string& agent_url, const std::string& path,
                                       std::string& error) {
  if (agent_url.rfind("http://", 0) != 0) {
    error = "agent URL must start with http:// (got '" + agent_url + "')";
    return std::nullopt;
  }
  httplib::Client client(agent_url);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(10, 0);
  auto res = client.Get(path.c_str());
  if (!res) {
    error = "cannot reach mltapd at " + agent_url + " (" + httplib::to_string(res.error()) +
            "); is it running? (set --agent or MLTAP_AGENT)";
    return std::nullopt;
  }
  if (res->status != 200) {
    error = "mltapd answered " + std::to_string(res->status) + " for " + path + ": " + res->body;
    return std::nullopt;
  }
  try {
    return nlohmann::json::parse(res->body);
  } catch (const std::exception& e) {
    error = std::string("mltapd sent invalid JSON: ") + e.what();
    return std::nullopt;
  }
}

}  // namespace mltap::cli
