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
std::optional<std::string> read_token(const std::string& what, const char* path,
                                      std::string& error) {
  std::ifstream in(path);
  std::stringstream ss;
  if (in) ss << in.rdbuf();
  std::string token = ss.str();
  const auto first = token.find_first_not_of(" \t\r\n");
  const auto last = token.find_last_not_of(" \t\r\n");
  if (!in || first == std::string::npos) {
    error = what + " '" + path + "': cannot read a token from it";
    return std::nullopt;
  }
  return token.substr(first, last - first + 1);
}

std::optional<std::string> api_token(std::string& error) {
  const char* path = std::getenv("MLTAP_API_TOKEN_FILE");
  if (!path || !*path) return std::string();
  return read_token("MLTAP_API_TOKEN_FILE", path, error);
}

std::optional<nlohmann::json> parse_answer(const httplib::Result& res, const std::string& agent_url,
                                           const std::string& path, std::string& error,
                                           int* status) {
  if (status) *status = res ? res->status : 0;
  if (!res) {
    error = "cannot reach mltapd at " + agent_url + " (" + httplib::to_string(res.error()) +
            "); is it running? (set --agent or MLTAP_AGENT)";
    return std::nullopt;
  }
  if (res->status != 200) {
    error = "mltapd answered " + std::to_string(res->status) + " for " + path + ": " + res->body;
    if (res->status == 401 || res->status == 403) {
      error += " (a bearer token: MLTAP_API_TOKEN_FILE for reads, --token-file for changes)";
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

}  // namespace

std::optional<nlohmann::json> get_json(const std::string& agent_url, const std::string& path,
                                       std::string& error, int* status) {
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
  return parse_answer(res, agent_url, path, error, status);
}

std::optional<nlohmann::json> post_json(const std::string& agent_url, const std::string& path,
                                        const nlohmann::json& body, const std::string& token_file,
                                        std::string& error) {
  if (agent_url.rfind("http://", 0) != 0) {
    error = "agent URL must start with http:// (got '" + agent_url + "')";
    return std::nullopt;
  }
  if (token_file.empty()) {
    error = "a change needs mltapd's webhook token: --token-file or MLTAP_TOKEN_FILE";
    return std::nullopt;
  }
  const auto token = read_token("token file", token_file.c_str(), error);
  if (!token) return std::nullopt;
  httplib::Client client(agent_url);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(10, 0);
  httplib::Headers headers{{"Authorization", "Bearer " + *token}};
  auto res = client.Post(path.c_str(), headers, body.dump(), "application/json");
  return parse_answer(res, agent_url, path, error, nullptr);
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
