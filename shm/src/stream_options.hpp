// Checking a stream's options (stream.cpp), shared with the C ABI (c_api.cpp).
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "mltap/stream.hpp"

namespace mltap::detail {

// An invalid setting in the environment (MLTAP_NAMESPACE): a std::invalid_argument for C++ and
// Python callers, MLTAP_ERR_ENVIRONMENT for C callers.
class EnvironmentError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The namespace a stream opens in: the option, else $MLTAP_NAMESPACE, else "default". Throws
// std::invalid_argument (an invalid option) or EnvironmentError (an invalid variable).
std::string namespace_from_options(const std::string& ns);

// Fills in defaults and throws std::invalid_argument naming the first thing that is wrong.
void check_options(std::string_view name, StreamOptions& options);

// The C ABI's way to the stream's state (Stream befriends it).
struct Access {
  static StreamCore* core(Stream& s) noexcept { return s.core_.get(); }
};

}  // namespace mltap::detail
