// Where mltapd listens: "127.0.0.1:9645", "[::1]:9645", ":9645" (all interfaces).
#pragma once

#include <string>

namespace mltap::api {

struct ListenAddress {
  std::string host;
  int port = 0;  // 0 = any free port (tests)
};

// Parses `text`; false with `error` (what is wrong with it) when it is not an address.
bool parse_listen_address(const std::string& text, ListenAddress& out, std::string& error);

}  // namespace mltap::api
