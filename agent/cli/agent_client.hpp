// Talking to a running mltapd from the CLI: GET a JSON document from its HTTP API.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace mltap::cli {

// Default agent URL: $MLTAP_AGENT or http://127.0.0.1:9645.
std::string default_agent_url();

// GETs `path` from `agent_url` (with the bearer token of $MLTAP_API_TOKEN_FILE when set); on failure returns nullopt and sets `error` to a sentence that
// says what to check ("is mltapd running? ...").
// `status`, when given, receives the HTTP status (0: no answer).
std::optional<nlohmann::json> get_json(const std::string& agent_url, const std::string& path,
                                       std::string& error, int* status = nullptr);

// POSTs `body` as JSON with the bearer token read from `token_file` (a state change: mltapd
// takes the webhook's token, docs/http.md); nullopt with `error` as get_json.
std::optional<nlohmann::json> post_json(const std::string& agent_url, const std::string& path,
                                        const nlohmann::json& body, const std::string& token_file,
                                        std::string& error);

// A query parameter's value, percent-encoded (stream names hold '/').
std::string percent_encode(const std::string& s);

}  // namespace mltap::cli
