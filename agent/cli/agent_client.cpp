#include "agent/cli/agent_client.hpp"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <httplib.h>

namespace mltap::cli {

std::string default_agent_url() {
  const char* v = std::getenv("MLTAP_AGENT");
  return v && *v ? v : "http://127.0.0.1:9645";
}

namespace {

// The read API's bearer token when $MLTAP_API_TOKEN_FILE names one (mltapd's
// agent.api_token_file; docs/http.md): "" when unset, nullopt with `error` when unreadable.
std::optional<std::string> api_token(std::string& error) {
  const char* path = std::getenv("MLTAP_API_TOKEN_FILE");
  if (!path || !*path) return std::string();
  std::ifstream in(path);
  std::stringstream ss;
  if (in) ss << in.rdbuf();
  std::string token = ss.str();
  const auto first = token.find_first_not_of(" \t\r\n");
  const auto last = token.find_last_not_of(" \t\r\n");
  if (!in || first == std::string::npos) {
    error = std::string("MLTAP_API_TOKEN_FILE '") + path + "': cannot read a token from it";
    return std::nullopt;
  }
  return token.substr(first, last - first + 1);
}

}  // namespace

std::optional<nlohmann::json> get_json(const std::string& agent_url, const std::string& path,
                                       std::string& error) {
  if (agent_url.rfind("http://", 0) != 0) {
    error = "agent URL must start with http:// (got '" + agent_url + "')";
    return std::nullopt;
  }
  const auto token = api_token(error);
  if (!token) return std::nullopt;
  httplib::Client client(agent_url);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(10, 0);
  httplib::Headers headers;
  if (!token->empty()) headers.emplace("Authorization", "Bearer " + *token);
  auto res = client.Get(path.c_str(), headers);
  if (!res) {
    error = "cannot reach mltapd at " + agent_url + " (" + httplib::to_string(res.error()) +
            "); is it running? (set --agent or MLTAP_AGENT)";
    return std::nullopt;
  }
  if (res->status != 200) {
    error = "mltapd answered " + std::to_string(res->status) + " for " + path + ": " + res->body;
    if (res->status == 401 || res->status == 403) {
      error += " (the read API's token: set MLTAP_API_TOKEN_FILE to mltapd's agent.api_token_file)";
    }
    return std::nullopt;
  }
  try {
    return nlohmann::json::parse(res->body);
  } catch (const std::exception& e) {
    error = std::string("mltapd sent invalid JSON: ") + e.what();
    return std::nullopt;
  }
}

std::string percent_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace mltap::cli
