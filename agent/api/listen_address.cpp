#include "agent/api/listen_address.hpp"

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

}  // namespace mltap::api
